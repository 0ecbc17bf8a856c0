package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// dialResult is the JSON line of `tlsprobe dial`.
type dialResult struct {
	OK         bool   `json:"ok"`
	Version    string `json:"version,omitempty"`
	Curve      string `json:"curve,omitempty"`
	CurveID    uint16 `json:"curve_id,omitempty"`
	PeerSHA256 string `json:"peer_sha256,omitempty"`
	// CertRequested: the server asked for a client certificate.
	CertRequested bool   `json:"cert_requested,omitempty"`
	Status        int    `json:"status,omitempty"`
	Body          string `json:"body,omitempty"`
	Error         string `json:"error,omitempty"`
}

// runDial makes one connection, reports the handshake and, with -path, the
// answer to one HTTP/1.1 request sent over that connection.
//
// Exit 0 when the handshake succeeded and, with -path, a response came back
// (whatever its status); 1 otherwise. In TLS 1.3 the server judges the
// client's certificate after the client's side of the handshake is done, so a
// refusal of it arrives as an alert on the first read: the request's read
// (with -path), or a short wait for it (-settle) when the server asked for a
// certificate and there is no -path. Either is reported as a failure.
func runDial(args []string) int {
	fs := newFlagSet("dial")
	var o tlsOptions
	o.register(fs, true, true, true)
	addr := fs.String("addr", "", "HOST:PORT to connect to")
	method := fs.String("method", "GET", "HTTP method of the request (with -path)")
	path := fs.String("path", "", "send one HTTP/1.1 request for this path after the handshake")
	var headers headerList
	fs.Var(&headers, "header", `request header "Name: value" (repeatable)`)
	body := fs.String("body", "", "request body (Content-Type defaults to application/json when a body is given)")
	timeout := fs.Duration("timeout", 10*time.Second, "limit for the connection, handshake and request")
	settle := fs.Duration("settle", 300*time.Millisecond, "without -path: how long to wait for an alert after a TLS 1.3 handshake in which the server asked for a certificate")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if *addr == "" {
		return usageError("dial needs -addr HOST:PORT")
	}
	if *path != "" && !strings.HasPrefix(*path, "/") {
		return usageError("-path must start with /, got %q", *path)
	}
	var asked bool
	cfg, err := o.config("localhost", &asked)
	if err != nil {
		return usageError("%v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res := dialResult{}
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", *addr)
	if err != nil {
		return finishDial(res, err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		res.CertRequested = asked
		return finishDial(res, err)
	}
	cs := conn.ConnectionState()
	id := negotiatedCurve(cs)
	res.Version = tls.VersionName(cs.Version)
	res.CurveID = uint16(id)
	if id != 0 {
		res.Curve = id.String()
	}
	res.PeerSHA256 = leafSHA256(cs)
	res.CertRequested = asked

	if *path == "" {
		if asked && cs.Version == tls.VersionTLS13 {
			return finishDial(res, awaitAlert(conn, *settle))
		}
		return finishDial(res, nil)
	}

	var rd io.Reader
	if *body != "" {
		rd = strings.NewReader(*body)
	}
	req, err := http.NewRequest(*method, "https://"+*addr+*path, rd)
	if err != nil {
		return usageError("building the request: %v", err)
	}
	for _, kv := range headers.split() {
		if strings.EqualFold(kv[0], "Host") {
			req.Host = kv[1]
			continue
		}
		req.Header.Add(kv[0], kv[1])
	}
	if *body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "tlsprobe")
	req.Close = true
	if err := req.Write(conn); err != nil {
		// The server may have refused the handshake and closed: its alert
		// says why, the failed write does not.
		if alert := awaitAlert(conn, 500*time.Millisecond); alert != nil {
			err = alert
		}
		return finishDial(res, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return finishDial(res, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	res.Status = resp.StatusCode
	res.Body = string(b)
	return finishDial(res, err)
}

// awaitAlert reads from conn for up to d and returns the error the server
// sent (an alert, or the connection closing), or nil if nothing came.
func awaitAlert(conn *tls.Conn, d time.Duration) error {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	var buf [1]byte
	_, err := conn.Read(buf[:])
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return errors.New("the server closed the connection right after the handshake: EOF")
	}
	return err
}

func finishDial(res dialResult, err error) int {
	if err != nil {
		res.OK = false
		res.Error = err.Error()
		printJSON(res)
		return 1
	}
	res.OK = true
	printJSON(res)
	return 0
}
