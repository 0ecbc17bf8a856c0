//! `qkeyd tls self-issue`: a first self-signed certificate for the REST API.
