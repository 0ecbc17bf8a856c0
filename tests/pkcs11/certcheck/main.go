// certcheck is an independent check of a certificate or certificate request
// qkeyd issued for an ML-DSA key: Go's crypto/x509 parses the structure, and
// circl's ML-DSA (FIPS 204, pure, empty context) verifies the signature over
// the to-be-signed bytes with the key in the SubjectPublicKeyInfo. It prints
// one JSON object and exits 0 only when both hold.
//
//	certcheck FILE.pem
package main

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"
)

// RFC 9881: id-ml-dsa-44/65/87.
var (
	mlDSA44 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 17}
	mlDSA65 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 18}
	mlDSA87 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 19}
)

type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type spki struct {
	Algorithm algorithmIdentifier
	PublicKey asn1.BitString
}

type report struct {
	Kind        string `json:"kind"`
	Subject     string `json:"subject"`
	Issuer      string `json:"issuer,omitempty"`
	Serial      string `json:"serial,omitempty"`
	SignatureOK bool   `json:"signature_ok"`
	Algorithm   string `json:"algorithm"`
	ParamsEmpty bool   `json:"parameters_absent"`
	KeyBytes    int    `json:"public_key_bytes"`
	IsCA        bool   `json:"is_ca"`
	KeyUsage    int    `json:"key_usage"`
}

// verify checks sig over msg with the ML-DSA key in raw SPKI bytes.
func verify(rawSPKI, msg, sig []byte, r *report) error {
	var k spki
	if rest, err := asn1.Unmarshal(rawSPKI, &k); err != nil || len(rest) != 0 {
		return fmt.Errorf("SubjectPublicKeyInfo: %v", err)
	}
	r.ParamsEmpty = len(k.Algorithm.Parameters.FullBytes) == 0
	key := k.PublicKey.RightAlign()
	r.KeyBytes = len(key)
	switch {
	case k.Algorithm.Algorithm.Equal(mlDSA44):
		r.Algorithm = "ML-DSA-44"
		var pk mldsa44.PublicKey
		if err := pk.UnmarshalBinary(key); err != nil {
			return err
		}
		r.SignatureOK = mldsa44.Verify(&pk, msg, nil, sig)
	case k.Algorithm.Algorithm.Equal(mlDSA65):
		r.Algorithm = "ML-DSA-65"
		var pk mldsa65.PublicKey
		if err := pk.UnmarshalBinary(key); err != nil {
			return err
		}
		r.SignatureOK = mldsa65.Verify(&pk, msg, nil, sig)
	case k.Algorithm.Algorithm.Equal(mlDSA87):
		r.Algorithm = "ML-DSA-87"
		var pk mldsa87.PublicKey
		if err := pk.UnmarshalBinary(key); err != nil {
			return err
		}
		r.SignatureOK = mldsa87.Verify(&pk, msg, nil, sig)
	default:
		return fmt.Errorf("not an ML-DSA key: %v", k.Algorithm.Algorithm)
	}
	return nil
}

func run(path string) (report, error) {
	var r report
	data, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return r, fmt.Errorf("%s: no PEM block", path)
	}
	switch block.Type {
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return r, err
		}
		r.Kind, r.Subject, r.Issuer = "certificate", c.Subject.String(), c.Issuer.String()
		r.Serial, r.IsCA, r.KeyUsage = c.SerialNumber.Text(16), c.IsCA, int(c.KeyUsage)
		return r, verify(c.RawSubjectPublicKeyInfo, c.RawTBSCertificate, c.Signature, &r)
	case "CERTIFICATE REQUEST":
		c, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			return r, err
		}
		r.Kind, r.Subject = "request", c.Subject.String()
		return r, verify(c.RawSubjectPublicKeyInfo, c.RawTBSCertificateRequest, c.Signature, &r)
	}
	return r, fmt.Errorf("%s: PEM type %q", path, block.Type)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: certcheck FILE.pem")
		os.Exit(2)
	}
	r, err := run(os.Args[1])
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
	if err != nil {
		fmt.Fprintln(os.Stderr, "certcheck:", err)
		os.Exit(1)
	}
	if !r.SignatureOK {
		os.Exit(1)
	}
}
