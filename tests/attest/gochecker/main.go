// Command gochecker checks a TPM 2.0 quote made for qkeyd's evidence format, with go-tpm
// and the Go standard library only: independently of qkeyd's own verifier.
//
//	gochecker -attest attest.bin -sig sig.bin -ak ak.pub -pcrs pcrs.json -extra <hex>
//
// prints one JSON line {"valid":bool,"check":"<first failed check>","detail":"..."} and
// exits 0 (valid), 1 (invalid) or 2 (usage error, unreadable file, malformed -pcrs or
// -extra). A malformed attest, signature or AK public is invalid evidence: exit 1, with the
// check it fails (quote_type, quote_signature, ak_public).
//
// With -mutations N -seed S it changes one byte at a time, N times, in attest.bin (even
// steps) or sig.bin (odd steps), checks each mutated quote and prints one line per
// mutation: "<attest|sig> <offset> <new byte, decimal> <true|false>" (true = still valid);
// a summary goes to stderr. It exits 0 if no mutation was valid, 1 if one was, 2 if the
// unmutated quote is not valid.
//
// Its tests check the golden quote in ../golden (made by ../make-golden.sh):
//
//	cd tests/attest/gochecker && GOTOOLCHAIN=local GOFLAGS=-mod=mod go test ./...
package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gochecker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	attestPath := fs.String("attest", "", "TPMS_ATTEST of the quote (TPM2B_ATTEST body)")
	sigPath := fs.String("sig", "", "TPMT_SIGNATURE of the quote")
	akPath := fs.String("ak", "", "the AK's TPM2B_PUBLIC")
	pcrsPath := fs.String("pcrs", "", `quoted sha256 PCR values, {"0":"<hex>",...}`)
	extraHex := fs.String("extra", "", "expected extraData (qualifying data), hex")
	mutations := fs.Int("mutations", 0, "check N single-byte mutations of attest and sig instead")
	seed := fs.Uint64("seed", 1, "seed of the mutations")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintln(stderr, "gochecker:", msg)
		if *mutations == 0 {
			printJSON(stdout, result{Valid: false, Detail: msg})
		}
		return 2
	}
	if fs.NArg() != 0 || *attestPath == "" || *sigPath == "" || *akPath == "" || *pcrsPath == "" {
		return usage("usage: gochecker -attest FILE -sig FILE -ak FILE -pcrs FILE -extra HEX [-mutations N -seed S]")
	}
	if *mutations < 0 {
		return usage("-mutations must not be negative")
	}
	attest, err := os.ReadFile(*attestPath)
	if err != nil {
		return usage("%v", err)
	}
	sig, err := os.ReadFile(*sigPath)
	if err != nil {
		return usage("%v", err)
	}
	ak, err := os.ReadFile(*akPath)
	if err != nil {
		return usage("%v", err)
	}
	pcrsJSON, err := os.ReadFile(*pcrsPath)
	if err != nil {
		return usage("%v", err)
	}
	var pcrMap map[string]string
	if err := json.Unmarshal(pcrsJSON, &pcrMap); err != nil {
		return usage("%s: %v", *pcrsPath, err)
	}
	pcrs, err := parsePCRs(pcrMap)
	if err != nil {
		return usage("%s: %v", *pcrsPath, err)
	}
	extra, err := hex.DecodeString(strings.TrimSpace(*extraHex))
	if err != nil {
		return usage("-extra: %v", err)
	}

	if *mutations == 0 {
		res := verify(attest, sig, ak, pcrs, extra)
		printJSON(stdout, res)
		if res.Valid {
			return 0
		}
		return 1
	}

	base := verify(attest, sig, ak, pcrs, extra)
	if !base.Valid {
		fmt.Fprintf(stderr, "gochecker: the unmutated quote is not valid (%s: %s)\n", base.Check, base.Detail)
		return 2
	}
	rng := rand.New(rand.NewPCG(*seed, 0x71_6b_65_79_64)) // second word: "qkeyd"
	valid := 0
	byCheck := map[string]int{}
	for i := 0; i < *mutations; i++ {
		name, target := "attest", attest
		if i%2 == 1 {
			name, target = "sig", sig
		}
		offset := rng.IntN(len(target))
		newByte := target[offset] ^ byte(1+rng.IntN(255))
		mutated := append([]byte(nil), target...)
		mutated[offset] = newByte
		var res result
		if name == "attest" {
			res = verify(mutated, sig, ak, pcrs, extra)
		} else {
			res = verify(attest, mutated, ak, pcrs, extra)
		}
		fmt.Fprintf(stdout, "%s %d %d %t\n", name, offset, newByte, res.Valid)
		if res.Valid {
			valid++
		} else {
			byCheck[res.Check]++
		}
	}
	checks := make([]string, 0, len(byCheck))
	for c := range byCheck {
		checks = append(checks, c)
	}
	sort.Strings(checks)
	parts := make([]string, len(checks))
	for i, c := range checks {
		parts[i] = fmt.Sprintf("%s %d", c, byCheck[c])
	}
	fmt.Fprintf(stderr, "mutations %d, valid %d, invalid %d (%s)\n", *mutations, valid, *mutations-valid, strings.Join(parts, ", "))
	if valid > 0 {
		return 1
	}
	return 0
}

func printJSON(w io.Writer, r result) {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	fmt.Fprintln(w, string(b))
}
