//go:build go1.25

package main

import "crypto/tls"

// negotiatedCurve is the key exchange group of a finished handshake.
// ConnectionState.CurveID is new in Go 1.25; the build tag lets this one file
// use it while the module says go 1.24.
func negotiatedCurve(cs tls.ConnectionState) tls.CurveID { return cs.CurveID }
