// Command tlsprobe is a TLS client for qkeyd's REST endpoint built on Go's
// crypto/tls only, so the end-to-end tests and the benchmark check the daemon
// against a TLS stack other than the one it serves with.
//
//	tlsprobe dial -addr H:P -ca FILE [-servername localhost] [-cert F -key F]
//	    [-max-version 1.2] [-curves X25519,X25519MLKEM768]
//	    [-method GET -path /v1/health -header "K: V" -body STR]
//	tlsprobe load -url https://H:P/PATH -ca FILE [-c 1000] [-d 6s]
//	    [-swap SRC:DST[,SRC:DST]] [-swap-at 3s]
//	tlsprobe handshakes -addr H:P -ca FILE [-curves X25519] [-c 4] [-d 10s]
//
// Each prints one JSON line on stdout. Exit status: 0 when the run did what
// was asked, 1 when it did not (see each subcommand), 2 on a usage error.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

const usage = `usage:
  tlsprobe dial -addr H:P -ca FILE [-servername NAME] [-cert F -key F] [-max-version 1.2]
                [-curves X25519,X25519MLKEM768] [-method GET -path /v1/health -header "K: V" -body STR]
  tlsprobe load -url https://H:P/PATH -ca FILE [-c 1000] [-d 6s] [-swap SRC:DST[,SRC:DST]] [-swap-at 3s]
  tlsprobe handshakes -addr H:P -ca FILE [-curves X25519] [-c 4] [-d 10s]
Run "tlsprobe SUBCOMMAND -h" for every flag.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var code int
	switch os.Args[1] {
	case "dial":
		code = runDial(os.Args[2:])
	case "load":
		code = runLoad(os.Args[2:])
	case "handshakes":
		code = runHandshakes(os.Args[2:])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "tlsprobe: unknown subcommand %q\n%s", os.Args[1], usage)
		code = 2
	}
	os.Exit(code)
}

// newFlagSet is a flag set that reports usage errors with exit status 2.
func newFlagSet(name string) *flag.FlagSet {
	return flag.NewFlagSet("tlsprobe "+name, flag.ContinueOnError)
}

// parseFlags parses args, and returns the exit status to stop with (2 on a
// usage error, 0 after -h) or -1 to go on.
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "tlsprobe: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	return -1
}

// usageError prints msg and returns exit status 2.
func usageError(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "tlsprobe: "+format+"\n", a...)
	return 2
}

// printJSON writes v as one JSON line on stdout.
func printJSON(v any) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "tlsprobe: writing the result: %v\n", err)
		os.Exit(1)
	}
}

// tlsOptions are the flags every subcommand shares for its TLS client.
type tlsOptions struct {
	ca         string
	serverName string
	cert       string
	key        string
	maxVersion string
	curves     string
}

func (o *tlsOptions) register(fs *flag.FlagSet, withClientCert, withVersion, withCurves bool) {
	fs.StringVar(&o.ca, "ca", "", "PEM file of the CA certificate(s) to trust (default: the system's roots)")
	fs.StringVar(&o.serverName, "servername", "", "SNI name and name the certificate must carry (default: localhost, or the URL's host for load)")
	if withClientCert {
		fs.StringVar(&o.cert, "cert", "", "PEM client certificate chain, leaf first (with -key)")
		fs.StringVar(&o.key, "key", "", "PEM private key of -cert")
	}
	if withVersion {
		fs.StringVar(&o.maxVersion, "max-version", "", `highest TLS version to offer: "1.2" or "1.3" (default: Go's, 1.3)`)
	}
	if withCurves {
		fs.StringVar(&o.curves, "curves", "", "comma-separated groups to offer, preferred first: X25519MLKEM768, X25519, P256, P384, P521 (default: Go's defaults)")
	}
}

// curveNames maps the names -curves accepts to Go's group identifiers.
var curveNames = map[string]tls.CurveID{
	"X25519MLKEM768": tls.X25519MLKEM768,
	"X25519":         tls.X25519,
	"P256":           tls.CurveP256,
	"P384":           tls.CurveP384,
	"P521":           tls.CurveP521,
	"CurveP256":      tls.CurveP256,
	"CurveP384":      tls.CurveP384,
	"CurveP521":      tls.CurveP521,
}

func parseCurves(s string) ([]tls.CurveID, error) {
	if s == "" {
		return nil, nil
	}
	var ids []tls.CurveID
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		id, ok := curveNames[name]
		if !ok {
			return nil, fmt.Errorf("unknown group %q in -curves (known: X25519MLKEM768, X25519, P256, P384, P521)", name)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// config builds the client configuration: no session cache, so every
// connection is a full handshake. clientCertAsked, when not nil, is set when
// the server asks for a client certificate.
func (o *tlsOptions) config(defaultServerName string, clientCertAsked *bool) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: o.serverName}
	if cfg.ServerName == "" {
		cfg.ServerName = defaultServerName
	}
	if o.ca != "" {
		pem, err := os.ReadFile(o.ca)
		if err != nil {
			return nil, fmt.Errorf("reading -ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca %s holds no PEM certificate", o.ca)
		}
		cfg.RootCAs = pool
	}
	if (o.cert == "") != (o.key == "") {
		return nil, errors.New("-cert and -key go together")
	}
	var clientCert *tls.Certificate
	if o.cert != "" {
		c, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return nil, fmt.Errorf("loading -cert/-key: %w", err)
		}
		clientCert = &c
	}
	if clientCert != nil || clientCertAsked != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if clientCertAsked != nil {
				*clientCertAsked = true
			}
			if clientCert == nil {
				return &tls.Certificate{}, nil // none: the server decides
			}
			return clientCert, nil
		}
	}
	switch o.maxVersion {
	case "":
	case "1.2":
		cfg.MaxVersion = tls.VersionTLS12
	case "1.3":
		cfg.MaxVersion = tls.VersionTLS13
	default:
		return nil, fmt.Errorf(`-max-version must be "1.2" or "1.3", got %q`, o.maxVersion)
	}
	curves, err := parseCurves(o.curves)
	if err != nil {
		return nil, err
	}
	cfg.CurvePreferences = curves // nil: Go's defaults (X25519MLKEM768 first)
	return cfg, nil
}

// leafSHA256 is the hex SHA-256 of the peer's leaf certificate DER.
func leafSHA256(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
	return hex.EncodeToString(sum[:])
}

// headerList is a repeatable -header "K: V" flag.
type headerList []string

func (h *headerList) String() string { return strings.Join(*h, ", ") }

func (h *headerList) Set(v string) error {
	k, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf(`a header is "Name: value", got %q`, v)
	}
	*h = append(*h, v)
	return nil
}

// split returns the name and value of each header.
func (h headerList) split() [][2]string {
	out := make([][2]string, 0, len(h))
	for _, v := range h {
		k, val, _ := strings.Cut(v, ":")
		out = append(out, [2]string{strings.TrimSpace(k), strings.TrimSpace(val)})
	}
	return out
}
