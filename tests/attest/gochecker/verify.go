package main

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Check names, as in the evidence format's list of verifier checks, in the order they run.
const (
	checkAKPublic       = "ak_public"
	checkQuoteSignature = "quote_signature"
	checkQuoteMagic     = "quote_magic"
	checkQuoteType      = "quote_type"
	checkExtraData      = "extra_data"
	checkPCRSelect      = "pcr_select"
	checkPCRDigest      = "pcr_digest"
	checkClockSafe      = "clock_safe"
)

// result is the one JSON line the checker prints.
type result struct {
	Valid  bool   `json:"valid"`
	Check  string `json:"check"`
	Detail string `json:"detail"`
}

func fail(check, format string, args ...any) result {
	return result{Valid: false, Check: check, Detail: fmt.Sprintf(format, args...)}
}

// pcrValue is one quoted PCR of the sha256 bank.
type pcrValue struct {
	index int
	value []byte
}

// parsePCRs reads {"<index>":"<hex of 32 bytes>",...} and returns the values by index.
func parsePCRs(m map[string]string) ([]pcrValue, error) {
	if len(m) == 0 {
		return nil, fmt.Errorf("no PCR values")
	}
	out := make([]pcrValue, 0, len(m))
	for k, v := range m {
		idx, err := strconv.Atoi(k)
		if err != nil || idx < 0 || idx > 23 || strconv.Itoa(idx) != k {
			return nil, fmt.Errorf("PCR index %q is not a number from 0 to 23", k)
		}
		b, err := hex.DecodeString(v)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("PCR %s: want 64 hex digits, got %q", k, v)
		}
		out = append(out, pcrValue{index: idx, value: b})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out, nil
}

// strict unmarshals data as T with go-tpm and insists that marshalling it again gives
// back exactly data: no trailing bytes, no alternative encodings.
func strict[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](data []byte) (*T, error) {
	t, err := tpm2.Unmarshal[T, P](data)
	if err != nil {
		return nil, err
	}
	if again := tpm2.Marshal(*t); !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%d bytes do not marshal back to themselves (%d bytes parsed)", len(data), len(again))
	}
	return t, nil
}

// akKey parses the AK's TPM2B_PUBLIC: ECC NIST P-256, nameAlg SHA-256, a restricted
// signing key with scheme ECDSA-SHA256, a point on the curve. It returns the key and Name.
func akKey(akPublic []byte) (*ecdsa.PublicKey, []byte, error) {
	pub2b, err := strict[tpm2.TPM2BPublic](akPublic)
	if err != nil {
		return nil, nil, fmt.Errorf("TPM2B_PUBLIC: %v", err)
	}
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, nil, fmt.Errorf("TPMT_PUBLIC: %v", err)
	}
	if again := tpm2.Marshal(*pub); !bytes.Equal(again, akPublic[2:]) {
		return nil, nil, fmt.Errorf("TPMT_PUBLIC does not marshal back to itself")
	}
	if pub.Type != tpm2.TPMAlgECC {
		return nil, nil, fmt.Errorf("type 0x%04x, want ECC (0x0023)", uint16(pub.Type))
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, nil, fmt.Errorf("nameAlg 0x%04x, want SHA-256", uint16(pub.NameAlg))
	}
	a := pub.ObjectAttributes
	if !a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		return nil, nil, fmt.Errorf("attributes 0x%08x, want a restricted signing key, fixedTPM, fixedParent, sensitiveDataOrigin", binary.BigEndian.Uint32(tpm2.Marshal(a)))
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, nil, err
	}
	if parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, nil, fmt.Errorf("curve 0x%04x, want NIST P-256", uint16(parms.CurveID))
	}
	if parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, nil, fmt.Errorf("scheme 0x%04x, want ECDSA", uint16(parms.Scheme.Scheme))
	}
	ecdsaScheme, err := parms.Scheme.Details.ECDSA()
	if err != nil || ecdsaScheme.HashAlg != tpm2.TPMAlgSHA256 {
		return nil, nil, fmt.Errorf("scheme hash is not SHA-256")
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, nil, err
	}
	if len(point.X.Buffer) > 32 || len(point.Y.Buffer) > 32 {
		return nil, nil, fmt.Errorf("point coordinates longer than 32 bytes")
	}
	uncompressed := make([]byte, 65)
	uncompressed[0] = 4
	copy(uncompressed[33-len(point.X.Buffer):33], point.X.Buffer)
	copy(uncompressed[65-len(point.Y.Buffer):65], point.Y.Buffer)
	if _, err := ecdh.P256().NewPublicKey(uncompressed); err != nil {
		return nil, nil, fmt.Errorf("point: %v", err)
	}
	key := &ecdsa.PublicKey{
		Curve: elliptic.P256(),
		X:     new(big.Int).SetBytes(point.X.Buffer),
		Y:     new(big.Int).SetBytes(point.Y.Buffer),
	}
	digest := sha256.Sum256(akPublic[2:])
	name := append([]byte{0x00, 0x0b}, digest[:]...)
	return key, name, nil
}

// verify checks a quote, stopping at the first failed check.
func verify(attest, sig, akPublic []byte, pcrs []pcrValue, extra []byte) result {
	key, name, err := akKey(akPublic)
	if err != nil {
		return fail(checkAKPublic, "AK public: %v", err)
	}

	// The signature over the raw bytes comes first: nothing unsigned is parsed.
	s, err := strict[tpm2.TPMTSignature](sig)
	if err != nil {
		return fail(checkQuoteSignature, "TPMT_SIGNATURE: %v", err)
	}
	if s.SigAlg != tpm2.TPMAlgECDSA {
		return fail(checkQuoteSignature, "signature algorithm 0x%04x, want ECDSA (0x0018)", uint16(s.SigAlg))
	}
	ecc, err := s.Signature.ECDSA()
	if err != nil {
		return fail(checkQuoteSignature, "TPMS_SIGNATURE_ECDSA: %v", err)
	}
	if ecc.Hash != tpm2.TPMAlgSHA256 {
		return fail(checkQuoteSignature, "signature hash 0x%04x, want SHA-256 (0x000b)", uint16(ecc.Hash))
	}
	digest := sha256.Sum256(attest)
	r := new(big.Int).SetBytes(ecc.SignatureR.Buffer)
	sv := new(big.Int).SetBytes(ecc.SignatureS.Buffer)
	if !ecdsa.Verify(key, digest[:], r, sv) {
		return fail(checkQuoteSignature, "ECDSA P-256 signature over SHA-256(attest) does not verify with the AK")
	}

	if len(attest) < 6 {
		return fail(checkQuoteMagic, "attest has %d bytes", len(attest))
	}
	if magic := binary.BigEndian.Uint32(attest[0:4]); magic != uint32(tpm2.TPMGeneratedValue) {
		return fail(checkQuoteMagic, "magic 0x%08x, want 0xff544347", magic)
	}
	if typ := binary.BigEndian.Uint16(attest[4:6]); typ != uint16(tpm2.TPMSTAttestQuote) {
		return fail(checkQuoteType, "type 0x%04x, want 0x8018 (TPM_ST_ATTEST_QUOTE)", typ)
	}
	att, err := strict[tpm2.TPMSAttest](attest)
	if err != nil {
		return fail(checkQuoteType, "TPMS_ATTEST: %v", err)
	}
	quote, err := att.Attested.Quote()
	if err != nil {
		return fail(checkQuoteType, "TPMS_QUOTE_INFO: %v", err)
	}

	if !bytes.Equal(att.ExtraData.Buffer, extra) {
		return fail(checkExtraData, "extraData %x, want %x", att.ExtraData.Buffer, extra)
	}

	sels := quote.PCRSelect.PCRSelections
	if len(sels) != 1 || sels[0].Hash != tpm2.TPMAlgSHA256 {
		return fail(checkPCRSelect, "the quote selects %s, want the sha256 bank only", describeSelection(sels))
	}
	selected := selectedIndices(sels[0].PCRSelect)
	want := make([]int, len(pcrs))
	for i, p := range pcrs {
		want[i] = p.index
	}
	if !equalInts(selected, want) {
		return fail(checkPCRSelect, "the quote selects sha256:%s, the PCR values are sha256:%s", joinInts(selected), joinInts(want))
	}

	h := sha256.New()
	for _, p := range pcrs {
		h.Write(p.value)
	}
	if got := h.Sum(nil); !bytes.Equal(quote.PCRDigest.Buffer, got) {
		return fail(checkPCRDigest, "pcrDigest %x, SHA-256 of the PCR values is %x", quote.PCRDigest.Buffer, got)
	}

	if !att.ClockInfo.Safe {
		return fail(checkClockSafe, "clockInfo.safe is 0")
	}

	return result{
		Valid: true,
		Detail: fmt.Sprintf("quote of sha256:%s by AK %x; resetCount %d, restartCount %d, firmwareVersion 0x%016x",
			joinInts(selected), name, att.ClockInfo.ResetCount, att.ClockInfo.RestartCount, att.FirmwareVersion),
	}
}

// selectedIndices lists the PCRs a TPMS_PCR_SELECTION bitmap selects, in selection order
// (octet 0 bit 0 is PCR 0).
func selectedIndices(bitmap []byte) []int {
	var out []int
	for octet, b := range bitmap {
		for bit := 0; bit < 8; bit++ {
			if b&(1<<bit) != 0 {
				out = append(out, octet*8+bit)
			}
		}
	}
	return out
}

func describeSelection(sels []tpm2.TPMSPCRSelection) string {
	if len(sels) == 0 {
		return "no bank"
	}
	parts := make([]string, len(sels))
	for i, s := range sels {
		parts[i] = fmt.Sprintf("hash 0x%04x:%s", uint16(s.Hash), joinInts(selectedIndices(s.PCRSelect)))
	}
	return strings.Join(parts, " ")
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ",")
}
