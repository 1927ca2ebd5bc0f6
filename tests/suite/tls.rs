//! TLS to the directory is verified: `roster apply` over StartTLS and ldaps with the site's CA
//! converges (against a private slapd that refuses plaintext binds, so the traffic really was
//! TLS), and a server certificate signed by an unknown CA, by no CA the system trusts, or made
//! out for another host is refused with a precise error before anything is sent or written.
//! The dev slapd and the private ones offer TLS with a CA `hack/lib/slapd.sh` generated.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const BASE: &str = "dc=roster,dc=test";

/// A private slapd (own CA, StartTLS on `port`, ldaps on `ldaps_port`), stopped when dropped.
struct Slapd {
    dir: PathBuf,
    port: u16,
    ldaps_port: u16,
}

impl Slapd {
    fn start(scratch: &Path) -> Slapd {
        let dir = scratch.join("slapd");
        support::faults::on_free_ports("slapd.sh", &dir, || {
            let slapd = Slapd {
                dir: dir.clone(),
                port: free_port(),
                ldaps_port: free_port(),
            };
            let out = Command::new(repo_root().join("hack/lib/slapd.sh"))
                .args(["start", "--dir"])
                .arg(&slapd.dir)
                .args(["--port", &slapd.port.to_string(), "--ldaps-port"])
                .arg(slapd.ldaps_port.to_string())
                .args(["--base", BASE])
                .output()
                .expect("hack/lib/slapd.sh runs");
            assert!(
                out.status.success(),
                "private slapd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            slapd
        })
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    fn password_file(&self) -> PathBuf {
        self.dir.join("admin.pw")
    }

    /// Changes cn=config as the uid running slapd (SASL EXTERNAL over ldapi).
    fn modify_config(&self, ldif: &str) {
        let uri = Command::new(repo_root().join("hack/lib/slapd.sh"))
            .args(["ldapi-uri", "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        let uri = String::from_utf8(uri.stdout).unwrap();
        let out = run_with_stdin(
            Command::new("ldapmodify").env("LDAPNOINIT", "1").args([
                "-Q",
                "-Y",
                "EXTERNAL",
                "-H",
                uri.trim(),
            ]),
            ldif,
        );
        assert!(out.status.success(), "ldapmodify: {out:?}");
    }

    /// A config for this server: `uri` with TLS `mode` and, if given, `ca`.
    fn config(&self, dir: &Path, name: &str, uri: &str, mode: &str, ca: Option<&Path>) -> String {
        let ca = ca
            .map(|c| format!(", caFile: {}", c.display()))
            .unwrap_or_default();
        let yaml = format!(
            "managerId: tls\nldap:\n  uri: {uri}\n  bindDN: cn=admin,{BASE}\n  bindPasswordFile: {}\n  baseDN: {BASE}\n  peopleDN: ou=people,{BASE}\n  groupsDN: ou=groups,{BASE}\n  tombstonesDN: ou=tombstones,{BASE}\n  countersDN: ou=counters,{BASE}\n  tls: {{mode: {mode}{ca}}}\nuidRange: {{min: 20000, max: 29999}}\ngidRange: {{min: 20000, max: 29999}}\n",
            self.password_file().display()
        );
        let path = dir.join(name);
        std::fs::write(&path, yaml).unwrap();
        path.display().to_string()
    }

    /// DNs below `base` matching `filter`, read with OpenLDAP's ldapsearch (GnuTLS, not
    /// Roster's TLS stack) over StartTLS verified against this server's CA.
    fn search(&self, base: &str, filter: &str) -> Vec<String> {
        ldapsearch(self, base, filter, Some(&self.ca()))
    }

    /// Every DN of the directory, read over plain LDAP.
    fn all_plain(&self) -> Vec<String> {
        ldapsearch(self, BASE, "(objectClass=*)", None)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("hack/lib/slapd.sh"))
            .args(["stop", "--dir"])
            .arg(&self.dir)
            .status();
    }
}

fn run_with_stdin(cmd: &mut Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `ldapsearch` as the rootDN of `BASE`: over StartTLS trusting only `ca` if given (`-ZZ`:
/// no fallback to plaintext), else plain; the DNs found.
fn ldapsearch(slapd: &Slapd, base: &str, filter: &str, ca: Option<&Path>) -> Vec<String> {
    let mut cmd = Command::new("ldapsearch");
    cmd.env_remove("LDAPURI")
        .env_remove("LDAPBASE")
        .env_remove("LDAPBINDDN")
        .env_remove("LDAPTLS_CACERT")
        .env("LDAPCONF", "/dev/null");
    if let Some(ca) = ca {
        cmd.env("LDAPTLS_CACERT", ca)
            .env("LDAPTLS_REQCERT", "demand")
            .arg("-ZZ");
    }
    let out = cmd
        .args(["-LLL", "-o", "ldif-wrap=no", "-x", "-H"])
        .arg(format!("ldap://127.0.0.1:{}", slapd.port))
        .args(["-D", &format!("cn=admin,{BASE}"), "-y"])
        .arg(slapd.password_file())
        .args(["-b", base, filter, "1.1"])
        .output()
        .expect("ldapsearch runs");
    assert!(
        out.status.success(),
        "ldapsearch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("dn: "))
        .map(str::to_string)
        .collect()
}

fn example_site() -> String {
    repo_root().join("examples/site").display().to_string()
}

/// The dev slapd's CA, as `hack/dev-up.sh` exports it.
fn dev_ca() -> PathBuf {
    PathBuf::from(&dev_env()["LDAP_TLS_CA_FILE"])
}

/// The test tree's config with `ldap.tls` set.
fn tree_config(tree: &TestTree, dir: &Path, name: &str, tls: &str) -> String {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let path = tree.write_config_with(&sub, &format!("ldap:\n  tls: {tls}\n"));
    path.display().to_string()
}

#[tokio::test]
async fn start_tls_and_ldaps_with_the_sites_ca_converge_a_directory_that_refuses_plaintext() {
    let dir = scratch("tls-converge");
    let slapd = Slapd::start(&dir);
    // The data may only be bound to and read over TLS (plaintext binds get result code 13).
    slapd.modify_config(
        "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcSecurity\nolcSecurity: tls=1\n",
    );
    let plain = format!("ldap://127.0.0.1:{}", slapd.port);
    let ldaps = format!("ldaps://127.0.0.1:{}", slapd.ldaps_port);
    let ca = slapd.ca();
    let before = slapd.search(BASE, "(objectClass=*)");

    // Without TLS this server refuses the bind: the check that the converging runs below
    // really spoke TLS.
    let cfg = slapd.config(&dir, "plain.yaml", &plain, "none", None);
    let (code, out, err) = roster(&["apply", "-f", &example_site(), "--config", &cfg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "the directory refused the bind as cn=admin,{BASE}: result code 13: TLS confidentiality required"
        )),
        "{err}"
    );
    assert_eq!(
        slapd.search(BASE, "(objectClass=*)"),
        before,
        "nothing written"
    );

    // StartTLS with the site's CA: the example site converges.
    let cfg = slapd.config(&dir, "starttls.yaml", &plain, "startTLS", Some(&ca));
    let (code, out, err) = roster(&["apply", "-f", &example_site(), "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let people = slapd.search(&format!("ou=people,{BASE}"), "(objectClass=posixAccount)");
    assert_eq!(people.len(), 32, "{people:?}");
    assert!(
        people.contains(&format!("uid=ada,ou=people,{BASE}")),
        "{people:?}"
    );

    // ldaps (TLS from the first byte) with the same CA reads it all back: nothing to change.
    let cfg = slapd.config(&dir, "ldaps.yaml", &ldaps, "ldaps", Some(&ca));
    let (code, out, err) = roster(&["plan", "-f", &example_site(), "--config", &cfg]);
    assert_eq!(code, 0, "converged, read over ldaps: {out}{err}");
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_or_without_a_ca_file_is_refused_and_nothing_is_written()
 {
    let tree = TestTree::new("tls-ca").await;
    let dir = scratch("tls-ca");
    let uri = &tree.config.ldap.uri;
    let site = example_site();
    let before = fingerprint(&tree.dn).await;

    // A CA of the test's own: the dev slapd's certificate is not signed by it.
    let other = test_ca(&dir, "other-ca");
    let cfg = tree_config(
        &tree,
        &dir,
        "other",
        &format!("{{mode: startTLS, caFile: {}}}", other.display()),
    );
    let (code, out, err) = roster(&["apply", "-f", &site, "--config", &cfg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "error: TLS to {uri}: the server's certificate is not signed by the CA(s) in ldap.tls.caFile {}; the bind password was not sent (invalid peer certificate: UnknownIssuer)",
            other.display()
        )),
        "{err}"
    );
    assert_eq!(fingerprint(&tree.dn).await, before, "nothing written");

    // No caFile: the system's CAs, which do not include the dev CA.
    let cfg = tree_config(&tree, &dir, "system", "{mode: startTLS}");
    let (code, out, err) = roster(&["apply", "-f", &site, "--config", &cfg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "error: TLS to {uri}: the server's certificate is not signed by the system's trusted CAs (ldap.tls.caFile is not set); the bind password was not sent"
        )),
        "{err}"
    );
    assert_eq!(fingerprint(&tree.dn).await, before, "nothing written");

    // The same server with the CA hack/dev-up.sh exports: StartTLS, verified, converges.
    let cfg = tree_config(
        &tree,
        &dir,
        "dev-ca",
        &format!("{{mode: startTLS, caFile: {}}}", dev_ca().display()),
    );
    let (code, out, err) = roster(&["apply", "-f", &site, "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let mut ldap = admin().await;
    let people = entries(
        &mut ldap,
        &tree.config.people_dn(),
        "(objectClass=posixAccount)",
    )
    .await;
    assert_eq!(people.len(), 32);
    tree.cleanup().await;
}

#[tokio::test]
async fn a_server_certificate_for_another_host_is_refused() {
    let dir = scratch("tls-host");
    let slapd = Slapd::start(&dir);
    let uri = format!("ldap://127.0.0.1:{}", slapd.port);
    let cfg = slapd.config(&dir, "roster.yaml", &uri, "startTLS", Some(&slapd.ca()));
    let site = example_site();

    // The server's own certificate names 127.0.0.1: the plan reads the directory.
    let (code, out, err) = roster(&["plan", "-f", &site, "--config", &cfg]);
    assert_eq!(code, 2, "changes to make: {out}{err}");

    // Now it presents a certificate from the same CA, made out for ldap.example.org only
    // (changed in the running slapd, as hack/lib/slapd.sh does for existing instances).
    let ca = slapd.dir.join("tls");
    let (cert, key) = server_cert(
        &dir,
        "other-host",
        (&ca.join("ca.pem"), &ca.join("ca.key")),
        "DNS:ldap.example.org",
    );
    slapd.modify_config(&format!(
        "dn: cn=config\nchangetype: modify\nreplace: olcTLSCertificateFile\nolcTLSCertificateFile: {}\n-\nreplace: olcTLSCertificateKeyFile\nolcTLSCertificateKeyFile: {}\n",
        cert.display(),
        key.display()
    ));
    let before = slapd.all_plain();
    let (code, out, err) = roster(&["apply", "-f", &site, "--config", &cfg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "error: TLS to {uri}: the server's certificate is not valid for the host in ldap.uri; the bind password was not sent (invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"ldap.example.org\"))"
        )),
        "{err}"
    );
    assert_eq!(slapd.all_plain(), before, "nothing written");
}
