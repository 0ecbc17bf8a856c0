package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is the JSON line of `tlsprobe load`.
type loadResult struct {
	Requests int64    `json:"requests"`
	OK       int64    `json:"ok"`
	Failed   int64    `json:"failed"`
	Errors   []string `json:"errors"`
	// Fingerprints counts the successful requests by the hex SHA-256 of the
	// server's leaf certificate on their connection.
	Fingerprints map[string]int64 `json:"fingerprints"`
	Seconds      float64          `json:"seconds"`
	// SwappedAtMs is when the renames were done, in ms from the start.
	SwappedAtMs *int64   `json:"swapped_at_ms,omitempty"`
	SwapErrors  []string `json:"swap_errors,omitempty"`
}

type swapPair struct{ src, dst string }

func parseSwaps(s string) ([]swapPair, error) {
	if s == "" {
		return nil, nil
	}
	var out []swapPair
	for _, p := range strings.Split(s, ",") {
		src, dst, ok := strings.Cut(p, ":")
		if !ok || src == "" || dst == "" {
			return nil, fmt.Errorf("-swap takes SRC:DST[,SRC:DST], got %q", p)
		}
		out = append(out, swapPair{src, dst})
	}
	return out, nil
}

// loadStats gathers the outcome of every request.
type loadStats struct {
	requests, ok, failed atomic.Int64
	mu                   sync.Mutex
	errors               []string
	fingerprints         map[string]int64
}

func (s *loadStats) fail(msg string) {
	s.failed.Add(1)
	s.mu.Lock()
	if len(s.errors) < 5 {
		s.errors = append(s.errors, msg)
	}
	s.mu.Unlock()
}

func (s *loadStats) success(fp string) {
	s.ok.Add(1)
	s.mu.Lock()
	s.fingerprints[fp]++
	s.mu.Unlock()
}

// runLoad keeps -c requests in flight for -d, each on a fresh connection
// with a full handshake, and at -swap-at renames each SRC over DST (a
// certificate rotation under load). A request fails on a transport error or
// an HTTP status of 500 or more. Exit 0 when it ran (the counts tell the
// rest); 1 when no request was made or a rename failed.
func runLoad(args []string) int {
	fs := newFlagSet("load")
	var o tlsOptions
	o.register(fs, true, false, true)
	rawURL := fs.String("url", "", "https://HOST:PORT/PATH to GET")
	conc := fs.Int("c", 1000, "requests in flight")
	dur := fs.Duration("d", 6*time.Second, "how long to start new requests")
	swap := fs.String("swap", "", "SRC:DST[,SRC:DST]: files to rename over others at -swap-at")
	swapAt := fs.Duration("swap-at", 3*time.Second, "when to do the renames of -swap, from the start")
	timeout := fs.Duration("timeout", 10*time.Second, "limit for one request, connection and handshake included")
	var headers headerList
	fs.Var(&headers, "header", `request header "Name: value" (repeatable)`)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return usageError("load needs -url https://HOST:PORT/PATH, got %q", *rawURL)
	}
	if *conc < 1 || *dur <= 0 {
		return usageError("-c must be at least 1 and -d positive")
	}
	swaps, err := parseSwaps(*swap)
	if err != nil {
		return usageError("%v", err)
	}
	if len(swaps) > 0 && (*swapAt < 0 || *swapAt >= *dur) {
		return usageError("-swap-at (%v) must fall within -d (%v)", *swapAt, *dur)
	}
	cfg, err := o.config(u.Hostname(), nil)
	if err != nil {
		return usageError("%v", err)
	}
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			TLSClientConfig:     cfg,
			DisableKeepAlives:   true, // one connection, one full handshake, per request
			DialContext:         (&net.Dialer{Timeout: *timeout}).DialContext,
			TLSHandshakeTimeout: *timeout,
			MaxConnsPerHost:     0,
		},
	}
	hdrs := headers.split()

	stats := &loadStats{fingerprints: map[string]int64{}}
	res := loadResult{}
	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	if len(swaps) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(start.Add(*swapAt)))
			for _, p := range swaps {
				if err := os.Rename(p.src, p.dst); err != nil {
					res.SwapErrors = append(res.SwapErrors, err.Error())
				}
			}
			ms := time.Since(start).Milliseconds()
			res.SwappedAtMs = &ms
		}()
	}
	for i := 0; i < *conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				loadOnce(client, u.String(), hdrs, stats)
			}
		}()
	}
	wg.Wait()

	res.Seconds = round3(time.Since(start).Seconds())
	res.Requests = stats.requests.Load()
	res.OK = stats.ok.Load()
	res.Failed = stats.failed.Load()
	res.Errors = stats.errors
	if res.Errors == nil {
		res.Errors = []string{}
	}
	res.Fingerprints = stats.fingerprints
	printJSON(res)
	if res.Requests == 0 || len(res.SwapErrors) > 0 {
		return 1
	}
	return 0
}

func loadOnce(client *http.Client, target string, hdrs [][2]string, stats *loadStats) {
	stats.requests.Add(1)
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		stats.fail(err.Error())
		return
	}
	for _, kv := range hdrs {
		if strings.EqualFold(kv[0], "Host") {
			req.Host = kv[1]
			continue
		}
		req.Header.Add(kv[0], kv[1])
	}
	req.Header.Set("User-Agent", "tlsprobe")
	resp, err := client.Do(req)
	if err != nil {
		stats.fail(err.Error())
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	switch {
	case err != nil:
		stats.fail(fmt.Sprintf("reading the body: %v", err))
	case resp.StatusCode >= 500:
		stats.fail(fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, body))
	case resp.TLS == nil:
		stats.fail("the response came without TLS")
	default:
		stats.success(leafSHA256(*resp.TLS))
	}
}
