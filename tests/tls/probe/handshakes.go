package main

import (
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"sort"
	"sync"
	"time"
)

// handshakesResult is the JSON line of `tlsprobe handshakes`.
type handshakesResult struct {
	Curve      string   `json:"curve"`
	Handshakes int      `json:"handshakes"`
	Errors     int      `json:"errors"`
	Seconds    float64  `json:"seconds"`
	Rate       float64  `json:"rate"`
	P50Ms      float64  `json:"p50_ms"`
	P99Ms      float64  `json:"p99_ms"`
	FirstError []string `json:"first_errors,omitempty"`
}

// hsWorker is one goroutine's tally.
type hsWorker struct {
	lat    []time.Duration
	curves map[tls.CurveID]int
	errors int
	first  []string
}

func (w *hsWorker) fail(err string) {
	w.errors++
	if len(w.first) < 5 {
		w.first = append(w.first, err)
	}
}

// runHandshakes has -c goroutines each doing full handshakes (TCP connect,
// handshake, close; no resumption) for -d. A handshake's latency runs from
// the start of the dial to the end of the handshake. A handshake that
// negotiates another group than the first of -curves counts as an error.
// Exit 0 when there were handshakes and no errors; 1 otherwise.
func runHandshakes(args []string) int {
	fs := newFlagSet("handshakes")
	var o tlsOptions
	o.register(fs, false, true, true)
	addr := fs.String("addr", "", "HOST:PORT to connect to")
	conc := fs.Int("c", 4, "goroutines, each doing one handshake at a time")
	dur := fs.Duration("d", 10*time.Second, "how long to start new handshakes")
	timeout := fs.Duration("timeout", 10*time.Second, "limit for one connection and handshake")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if *addr == "" {
		return usageError("handshakes needs -addr HOST:PORT")
	}
	if *conc < 1 || *dur <= 0 {
		return usageError("-c must be at least 1 and -d positive")
	}
	cfg, err := o.config("localhost", nil)
	if err != nil {
		return usageError("%v", err)
	}
	var want tls.CurveID
	if len(cfg.CurvePreferences) > 0 {
		want = cfg.CurvePreferences[0]
	}

	workers := make([]*hsWorker, *conc)
	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for i := range workers {
		w := &hsWorker{curves: map[tls.CurveID]int{}}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			dialer := &net.Dialer{Timeout: *timeout}
			for time.Now().Before(deadline) {
				t0 := time.Now()
				conn, err := tls.DialWithDialer(dialer, "tcp", *addr, cfg)
				if err != nil {
					w.fail(err.Error())
					continue
				}
				d := time.Since(t0)
				got := negotiatedCurve(conn.ConnectionState())
				conn.Close()
				if want != 0 && got != want {
					w.fail(fmt.Sprintf("negotiated %v, asked for %v", got, want))
					continue
				}
				w.lat = append(w.lat, d)
				w.curves[got]++
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()

	var all []time.Duration
	curves := map[tls.CurveID]int{}
	res := handshakesResult{Seconds: round3(secs)}
	for _, w := range workers {
		all = append(all, w.lat...)
		for c, n := range w.curves {
			curves[c] += n
		}
		res.Errors += w.errors
		for _, e := range w.first {
			if len(res.FirstError) < 5 {
				res.FirstError = append(res.FirstError, e)
			}
		}
	}
	res.Handshakes = len(all)
	res.Rate = round3(float64(res.Handshakes) / secs)
	// The group: the asked one, or the one most handshakes negotiated.
	if want != 0 {
		res.Curve = want.String()
	} else {
		best := -1
		for c, n := range curves {
			if n > best {
				best, res.Curve = n, c.String()
			}
		}
	}
	if len(all) > 0 {
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		res.P50Ms = round3(ms(percentile(all, 0.50)))
		res.P99Ms = round3(ms(percentile(all, 0.99)))
	}
	printJSON(res)
	if res.Handshakes == 0 || res.Errors > 0 {
		return 1
	}
	return 0
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
