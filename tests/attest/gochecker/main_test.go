package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The golden quote made by tests/attest/make-golden.sh with swtpm and tpm2-tools.
const golden = "../golden"

type quote struct {
	attest, sig, ak []byte
	pcrs            []pcrValue
	extra           []byte
}

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(golden, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func goldenQuote(t *testing.T) quote {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal(read(t, "pcrs.json"), &m); err != nil {
		t.Fatal(err)
	}
	pcrs, err := parsePCRs(m)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := hex.DecodeString(strings.TrimSpace(string(read(t, "extra_data.hex"))))
	if err != nil {
		t.Fatal(err)
	}
	return quote{read(t, "attest.bin"), read(t, "sig.bin"), read(t, "ak.pub"), pcrs, extra}
}

func (q quote) verify() result { return verify(q.attest, q.sig, q.ak, q.pcrs, q.extra) }

func wantFail(t *testing.T, res result, check string) {
	t.Helper()
	if res.Valid || res.Check != check {
		t.Fatalf("want failed check %q, got %+v", check, res)
	}
}

func TestGoldenQuoteIsValid(t *testing.T) {
	q := goldenQuote(t)
	res := q.verify()
	if !res.Valid || res.Check != "" {
		t.Fatalf("golden quote: %+v", res)
	}
	name := strings.TrimSpace(string(read(t, "ak.name.hex")))
	if !strings.Contains(res.Detail, "by AK "+name+";") {
		t.Fatalf("detail %q does not name the AK %s", res.Detail, name)
	}
}

// Every bit of every byte of the attest and of the signature, flipped alone, breaks the
// signature check.
func TestEveryBitFlipIsRefused(t *testing.T) {
	q := goldenQuote(t)
	for _, target := range []string{"attest", "sig"} {
		orig := q.attest
		if target == "sig" {
			orig = q.sig
		}
		for off := range orig {
			for bit := 0; bit < 8; bit++ {
				m := q
				b := append([]byte(nil), orig...)
				b[off] ^= 1 << bit
				if target == "sig" {
					m.sig = b
				} else {
					m.attest = b
				}
				res := m.verify()
				if res.Valid || res.Check != checkQuoteSignature {
					t.Fatalf("%s byte %d bit %d: %+v", target, off, bit, res)
				}
			}
		}
	}
}

func TestWrongExtraData(t *testing.T) {
	q := goldenQuote(t)
	q.extra = append([]byte(nil), q.extra...)
	q.extra[0] ^= 1
	wantFail(t, q.verify(), checkExtraData)
	q.extra = nil
	wantFail(t, q.verify(), checkExtraData)
}

func TestPCRValuesMustMatch(t *testing.T) {
	q := goldenQuote(t)
	changed := append([]pcrValue(nil), q.pcrs...)
	changed[3] = pcrValue{index: 3, value: bytes.Repeat([]byte{0x11}, 32)}
	q2 := q
	q2.pcrs = changed
	wantFail(t, q2.verify(), checkPCRDigest)

	q3 := q
	q3.pcrs = append(append([]pcrValue(nil), q.pcrs[:3]...), q.pcrs[4:]...)
	wantFail(t, q3.verify(), checkPCRSelect)

	q4 := q
	q4.pcrs = append(append([]pcrValue(nil), q.pcrs...), pcrValue{index: 8, value: make([]byte, 32)})
	wantFail(t, q4.verify(), checkPCRSelect)
}

// The TPM2_Certify attest is signed by the same AK: its signature holds, its type does not.
func TestCertifyIsNoQuote(t *testing.T) {
	q := goldenQuote(t)
	q.attest = read(t, "certify_attest.bin")
	q.sig = read(t, "certify_sig.bin")
	res := q.verify()
	wantFail(t, res, checkQuoteType)
	if !strings.Contains(res.Detail, "0x8017") {
		t.Fatalf("detail: %q", res.Detail)
	}
}

func TestAKPublicIsChecked(t *testing.T) {
	q := goldenQuote(t)
	// An unrestricted ECC key of the same TPM.
	q.ak = read(t, "certified.pub")
	wantFail(t, q.verify(), checkAKPublic)
	// The EK: RSA.
	q.ak = read(t, "ek.pub")
	wantFail(t, q.verify(), checkAKPublic)
	// A trailing byte.
	q.ak = append(read(t, "ak.pub"), 0)
	wantFail(t, q.verify(), checkAKPublic)
	// A point off the curve.
	ak := read(t, "ak.pub")
	ak[len(ak)-1] ^= 1
	q.ak = ak
	wantFail(t, q.verify(), checkAKPublic)
}

// resigned replaces the AK with a fresh P-256 key (same TPM2B_PUBLIC otherwise) and signs
// attest with it, so that the checks after the signature see the changed bytes.
func resigned(t *testing.T, q quote, attest []byte) quote {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ak := append([]byte(nil), q.ak...)
	// TPMS_ECC_POINT is last: 0x0020 || x || 0x0020 || y.
	n := len(ak)
	key.X.FillBytes(ak[n-66 : n-34])
	key.Y.FillBytes(ak[n-32:])
	digest := sha256.Sum256(attest)
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := []byte{0x00, 0x18, 0x00, 0x0b, 0x00, 0x20}
	sig = append(sig, r.FillBytes(make([]byte, 32))...)
	sig = append(sig, 0x00, 0x20)
	sig = append(sig, s.FillBytes(make([]byte, 32))...)
	q.attest, q.sig, q.ak = attest, sig, ak
	return q
}

func TestChecksAfterTheSignature(t *testing.T) {
	q := goldenQuote(t)
	if res := resigned(t, q, q.attest).verify(); !res.Valid {
		t.Fatalf("re-signed golden quote: %+v", res)
	}
	mutate := func(f func(b []byte) []byte) quote {
		return resigned(t, q, f(append([]byte(nil), q.attest...)))
	}
	// Offsets in the golden TPMS_ATTEST: magic 0, type 4, qualifiedSigner 6 (2+34),
	// extraData 42 (2+32), clockInfo 76 (clock 8, resetCount 4, restartCount 4, safe 1),
	// firmwareVersion 93, TPMS_QUOTE_INFO 101 (count 4, hash 2, sizeofSelect 1, 3 octets,
	// then the 2+32 byte pcrDigest).
	wantFail(t, mutate(func(b []byte) []byte { b[0] ^= 1; return b }).verify(), checkQuoteMagic)
	wantFail(t, mutate(func(b []byte) []byte { b[5] = 0x17; return b }).verify(), checkQuoteType)
	wantFail(t, mutate(func(b []byte) []byte { return append(b, 0) }).verify(), checkQuoteType)
	wantFail(t, mutate(func(b []byte) []byte { return b[:len(b)-1] }).verify(), checkQuoteType)
	wantFail(t, mutate(func(b []byte) []byte { b[50] ^= 1; return b }).verify(), checkExtraData)
	wantFail(t, mutate(func(b []byte) []byte { b[109] = 0x7f; return b }).verify(), checkPCRSelect)
	wantFail(t, mutate(func(b []byte) []byte { b[105] = 0x00; b[106] = 0x0c; return b }).verify(), checkPCRSelect)
	wantFail(t, mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }).verify(), checkPCRDigest)
	wantFail(t, mutate(func(b []byte) []byte { b[92] = 0; return b }).verify(), checkClockSafe)
	wantFail(t, mutate(func(b []byte) []byte { b[92] = 2; return b }).verify(), checkQuoteType)
}

func TestMutationMode(t *testing.T) {
	x := strings.TrimSpace(string(read(t, "extra_data.hex")))
	args := []string{
		"-attest", filepath.Join(golden, "attest.bin"), "-sig", filepath.Join(golden, "sig.bin"),
		"-ak", filepath.Join(golden, "ak.pub"), "-pcrs", filepath.Join(golden, "pcrs.json"),
		"-extra", x, "-mutations", "1000", "-seed", "7",
	}
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1000 {
		t.Fatalf("%d lines", len(lines))
	}
	for i, l := range lines {
		f := strings.Fields(l)
		want := "attest"
		if i%2 == 1 {
			want = "sig"
		}
		if len(f) != 4 || f[0] != want || f[3] != "false" {
			t.Fatalf("line %d: %q", i, l)
		}
	}
	if !strings.Contains(errOut.String(), "mutations 1000, valid 0, invalid 1000") {
		t.Fatalf("summary: %q", errOut.String())
	}
	var again bytes.Buffer
	run(args, &again, &bytes.Buffer{})
	if again.String() != out.String() {
		t.Fatal("the same seed gave other mutations")
	}
}

func TestExitCodes(t *testing.T) {
	x := strings.TrimSpace(string(read(t, "extra_data.hex")))
	base := []string{
		"-attest", filepath.Join(golden, "attest.bin"), "-sig", filepath.Join(golden, "sig.bin"),
		"-ak", filepath.Join(golden, "ak.pub"), "-pcrs", filepath.Join(golden, "pcrs.json"),
	}
	code := func(args ...string) (int, result) {
		var out bytes.Buffer
		c := run(args, &out, &bytes.Buffer{})
		var r result
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%v: not one JSON line: %q", args, out.String())
		}
		return c, r
	}
	if c, r := code(append(base, "-extra", x)...); c != 0 || !r.Valid {
		t.Fatalf("valid: exit %d %+v", c, r)
	}
	if c, r := code(append(base, "-extra", "00")...); c != 1 || r.Check != checkExtraData {
		t.Fatalf("invalid: exit %d %+v", c, r)
	}
	if c, _ := code(append(base, "-extra", "zz")...); c != 2 {
		t.Fatalf("bad hex: exit %d", c)
	}
	if c, _ := code("-attest", filepath.Join(golden, "attest.bin")); c != 2 {
		t.Fatalf("usage: exit %d", c)
	}
	bad := filepath.Join(t.TempDir(), "pcrs.json")
	if err := os.WriteFile(bad, []byte(`{"0":"00"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string(nil), base...)
	args[7] = bad
	if c, _ := code(append(args, "-extra", x)...); c != 2 {
		t.Fatalf("malformed pcrs.json: exit %d", c)
	}
}
