//go:build !go1.25

package main

// The probe reports the negotiated group, which Go exposes from 1.25 on.
var _ = tlsprobe_needs_go_1_25_or_later
