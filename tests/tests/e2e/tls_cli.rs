//! `qkeyd tls self-issue` and the `qkeyd keys` / `qkeyd kms` clients over
//! https: the certificate the command prints is the one OpenSSL and curl are
//! served, it is its own CA file, and the CLI speaks TLS with `--ca-file`, a
//! client certificate, or neither (a clear refusal).

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use qkeyd_e2e::{Daemon, pki::Ca, qkeyd_bin};
use serde_json::Value;

const SOURCE: &str = "[[source]]\nname = \"os\"\nkind = \"os\"\n";

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let Output { status, stdout, stderr } = Command::new(qkeyd_bin())
        .args(args)
        .env_remove("QKEYD_URL")
        .env_remove("QKEYD_TOKEN_FILE")
        .env_remove("QKEYD_CA_FILE")
        .env_remove("QKEYD_CLIENT_CERT")
        .env_remove("QKEYD_CLIENT_KEY")
        .env_remove("QKEYD_STATE_DIR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (status.code(), text(stdout), text(stderr))
}

/// What `qkeyd tls self-issue` printed.
struct SelfIssued {
    sha256: String,
    cert: PathBuf,
    key: PathBuf,
}

fn self_issue(state: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let state = state.to_str().unwrap();
    let args = [&["tls", "self-issue", "--state-dir", state][..], extra].concat();
    run(&args, &[])
}

fn self_issue_ok(state: &Path) -> SelfIssued {
    let (code, out, err) = self_issue(state, &["--san", "DNS:localhost", "--san", "IP:127.0.0.1"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let sha256 = lines[0].strip_prefix("sha256:").unwrap().to_owned();
    assert_eq!(sha256.len(), 64);
    assert!(sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let cert = PathBuf::from(lines[1].strip_prefix("cert: ").unwrap());
    let key = PathBuf::from(lines[2].strip_prefix("key: ").unwrap());
    assert_eq!(
        err.trim(),
        format!(
            "start with: qkeyd serve --tls-cert {} --tls-key {}",
            cert.display(),
            key.display()
        )
    );
    SelfIssued { sha256, cert, key }
}

/// A TLS daemon on the self-issued pair, with the KMS plugin on an abstract
/// socket, and `extra_tls` lines in its `[tls]` table.
fn start(dir: tempfile::TempDir, state: &Path, issued: &SelfIssued, extra_tls: &str) -> Daemon {
    let config = format!(
        "{SOURCE}[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra_tls}\n",
        issued.cert.display(),
        issued.key.display()
    );
    let socket = format!("@qkeyd-e2e-tls-cli-{}-{}", std::process::id(), extra_tls.len());
    let d = Daemon::start_with_args(dir, &config, state, &["--kms-socket", &socket]);
    assert_eq!(d.scheme, "https", "{}", d.log());
    d
}

/// The leaf certificate `openssl s_client` is served, as DER, and whether
/// OpenSSL verified it against `ca`.
fn openssl_leaf(addr: &str, ca: &Path) -> (Vec<u8>, bool) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost", "-CAfile"])
        .arg(ca)
        .args(["-verify_hostname", "localhost", "-verify_return_error"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----").unwrap_or_else(|| panic!("{text}"));
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let der = Command::new("openssl")
        .args(["x509", "-outform", "der"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(text[begin..end].as_bytes())?;
            c.wait_with_output()
        })
        .unwrap()
        .stdout;
    (der, text.contains("Verify return code: 0 (ok)"))
}

#[test]
fn self_issue_then_serve_then_keys_and_kms_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let issued = self_issue_ok(&state);
    assert_eq!(issued.cert, state.join("tls/server.crt"));
    assert_eq!(issued.key, state.join("tls/server.key"));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state.join("tls")), 0o700);
    assert_eq!((mode(&issued.cert), mode(&issued.key)), (0o600, 0o600));

    // A second run refuses (exit 3) and leaves both files as they were.
    let (cert, key) = (fs::read(&issued.cert).unwrap(), fs::read(&issued.key).unwrap());
    let (code, out, err) = self_issue(&state, &["--san", "DNS:localhost"]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.is_empty() && err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!((fs::read(&issued.cert).unwrap(), fs::read(&issued.key).unwrap()), (cert, key));
    // A SAN that is neither DNS: nor IP: is refused the same way.
    let (code, _, err) = self_issue(&dir.path().join("other"), &["--san", "localhost"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("DNS:<name> or IP:<address>"), "{err}");
    assert!(!dir.path().join("other/tls").exists());

    let d = start(dir, &state, &issued, "");
    let addr = d.addr.to_string();
    let url = format!("https://{addr}");

    // OpenSSL is served the printed certificate, and verifies it against
    // itself for the name localhost.
    let (der, verified) = openssl_leaf(&addr, &issued.cert);
    assert_eq!(qkeyd_e2e::pki::sha256_hex(&der), issued.sha256);
    assert!(verified, "OpenSSL did not verify the self-issued certificate");
    // curl, by DNS name, with the certificate as its CA file.
    let port = d.addr.port();
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&issued.cert)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code}", &format!("https://localhost:{port}/v1/health")])
        .output()
        .unwrap();
    let curl_out = String::from_utf8_lossy(&curl.stdout);
    assert!(curl.status.success(), "{}", String::from_utf8_lossy(&curl.stderr));
    assert!(curl_out.ends_with("\n200"), "{curl_out}");

    // The CLI over https, trusting the certificate itself.
    let token = d.state.join("api-token");
    let (ca, token) = (issued.cert.to_str().unwrap(), token.to_str().unwrap());
    let tls = ["--url", &url, "--ca-file", ca, "--token-file", token];
    let keys = |args: &[&str]| run(&[&["keys"][..], &tls, args].concat(), &[]);
    let (code, out, err) = keys(&["create", "--alg", "ml-dsa-44", "--label", "over-tls"]);
    assert_eq!(code, Some(0), "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let (code, list, err) = keys(&["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        list.contains(&id) && list.contains("ml-dsa-44") && list.contains("over-tls"),
        "{list}"
    );
    let msg = d.dir.path().join("msg");
    fs::write(&msg, b"signed over TLS").unwrap();
    let msg = msg.to_str().unwrap();
    let (code, sig, err) = keys(&["sign", &id, "--message", msg]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, _) = keys(&["verify", &id, "--message", msg, "--signature", sig.trim()]);
    assert_eq!((code, out.trim()), (Some(0), "valid"));

    // kms, with the options from the environment this time.
    let env = [("QKEYD_URL", url.as_str()), ("QKEYD_CA_FILE", ca), ("QKEYD_TOKEN_FILE", token)];
    let (code, before, err) = run(&["kms", "list"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert!(before.starts_with("qkeyd-kek-") && before.contains("write"), "{before}");
    let (code, new, err) = run(&["kms", "rotate"], &env);
    assert_eq!(code, Some(0), "{err}");
    let new = new.trim();
    let (_, after, _) = run(&["kms", "list"], &env);
    assert!(after.contains(new) && new.starts_with("qkeyd-kek-"), "{after}");

    // https without --ca-file: refused before connecting, saying what to give.
    let (code, out, err) = run(&["keys", "--url", &url, "--token-file", token, "list"], &[]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty());
    assert!(err.contains("needs --ca-file FILE (or QKEYD_CA_FILE)"), "{err}");
    assert!(err.contains("server.crt"), "{err}");

    // A CA file that did not sign the daemon's certificate.
    let other = tempfile::tempdir().unwrap();
    let stranger = self_issue_ok(other.path());
    let (code, _, err) = run(
        &[
            "kms",
            "--url",
            &url,
            "--ca-file",
            stranger.cert.to_str().unwrap(),
            "--token-file",
            token,
            "list",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("does not chain to a certificate in --ca-file"), "{err}");

    // Plain HTTP to the TLS port, and TLS options with a plain URL.
    let http = format!("http://{addr}");
    let (code, _, err) = run(&["keys", "--url", &http, "--token-file", token, "list"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is it serving https://?"), "{err}");
    let (code, _, err) =
        run(&["keys", "--url", &http, "--ca-file", ca, "--token-file", token, "list"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--ca-file is for https:// URLs"), "{err}");
}

#[test]
fn a_client_certificate_stands_in_for_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let issued = self_issue_ok(&state);
    let ca = Ca::new("qkeyd e2e client CA");
    let ca_pem = ca.write(dir.path(), "client-ca");
    let (ops_cert, ops_key) = ca.client("ops").write(dir.path(), "ops");
    let (guest_cert, guest_key) = ca.client("guest").write(dir.path(), "guest");
    let extra = format!(
        "client_ca = \"{}\"\n[[tls.client]]\nidentity = \"cn:ops\"\n\
         rights = [\"keys:read\", \"keys:admin\", \"kms:admin\"]",
        ca_pem.display()
    );
    let d = start(dir, &state, &issued, &extra);
    let url = format!("https://{}", d.addr);
    let server_ca = issued.cert.to_str().unwrap();
    let no_token = d.dir.path().join("no-such-token");
    let with = |cert: &Path, key: &Path, args: &[&str]| {
        let base = [
            "--url",
            &url,
            "--ca-file",
            server_ca,
            "--token-file",
            no_token.to_str().unwrap(),
            "--client-cert",
            cert.to_str().unwrap(),
            "--client-key",
            key.to_str().unwrap(),
        ];
        let (cmd, rest) = args.split_first().unwrap();
        run(&[&[*cmd][..], &base, rest].concat(), &[])
    };

    // ops: no token file, the certificate's rights suffice.
    let (code, out, err) = with(&ops_cert, &ops_key, &["keys", "create", "--alg", "ml-kem-768"]);
    assert_eq!(code, Some(0), "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"].as_str().unwrap().to_owned();
    let (code, list, err) = with(&ops_cert, &ops_key, &["keys", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(list.contains(&id), "{list}");
    let (code, out, err) = with(&ops_cert, &ops_key, &["kms", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("qkeyd-kek-"), "{out}");

    // guest: verified, but no rule names it: the anonymous rights only.
    let (code, _, err) = with(&guest_cert, &guest_key, &["keys", "list"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("403"), "{err}");

    // A key that is not the certificate's is refused before connecting.
    let (code, _, err) = with(&ops_cert, &guest_key, &["keys", "list"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not go with --client-cert"), "{err}");

    // Without a certificate, the token file is required as before.
    let (code, _, err) = run(
        &[
            "keys",
            "--url",
            &url,
            "--ca-file",
            server_ca,
            "--token-file",
            no_token.to_str().unwrap(),
            "list",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read the API token"), "{err}");
    // And with a readable token, a certificate without rights still works
    // through the token.
    let token = d.state.join("api-token");
    let (code, list, err) = run(
        &[
            "keys",
            "--url",
            &url,
            "--ca-file",
            server_ca,
            "--token-file",
            token.to_str().unwrap(),
            "--client-cert",
            guest_cert.to_str().unwrap(),
            "--client-key",
            guest_key.to_str().unwrap(),
            "list",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(list.contains(&id), "{list}");
}
