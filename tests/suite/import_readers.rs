//! The ImportSource readers against real sources (started by hack/dev-up.sh): an "upstream"
//! subtree of the dev slapd, scratch tables in the dev MariaDB and the slurmdbd accounting
//! database itself. Each test has its own subtree, table and Slurm cluster.

use crate::support;

use std::process::Command;

use mysql_async::prelude::*;
use roster::api::LdapReader;
use roster::import::read::{ReadError, Row, read_ldap, read_sql};
use support::*;

/// An `ldap3` value list.
fn vals(v: &[&str]) -> std::collections::HashSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Adds an entry to the dev directory as admin.
async fn add(ldap: &mut ldap3::Ldap, dn: &str, attrs: Vec<(&str, &[&str])>) {
    let attrs: Vec<(String, std::collections::HashSet<String>)> = attrs
        .into_iter()
        .map(|(a, v)| (a.to_string(), vals(v)))
        .collect();
    ldap.add(dn, attrs)
        .await
        .unwrap()
        .success()
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

/// A person of the upstream directory.
async fn person(ldap: &mut ldap3::Ldap, base: &str, uid: &str, extra: Vec<(&str, &[&str])>) {
    let dn = format!("uid={uid},{base}");
    let mut attrs: Vec<(&str, &[&str])> = vec![
        ("objectClass", &["inetOrgPerson"]),
        ("uid", std::slice::from_ref(&uid)),
        ("cn", std::slice::from_ref(&uid)),
    ];
    attrs.extend(extra);
    add(ldap, &dn, attrs).await;
}

/// A reader of `base` in the dev directory, bound as its admin.
fn upstream(base: &str, filter: Option<&str>) -> (LdapReader, String) {
    let env = dev_env();
    let reader = LdapReader {
        url: env["LDAP_URI"].clone(),
        bind_dn: Some(env["LDAP_BIND_DN"].clone()),
        base_dn: base.to_string(),
        filter: filter.map(str::to_string),
        ..LdapReader::default()
    };
    (reader, env["LDAP_BIND_PASSWORD"].clone())
}

/// The test's own subtree with an empty `ou=upstream` below it, and an admin connection.
async fn upstream_tree(name: &str) -> (TestTree, String, ldap3::Ldap) {
    let tree = TestTree::new(name).await;
    let base = format!("ou=upstream,{}", tree.dn);
    let mut ldap = admin().await;
    add(
        &mut ldap,
        &base,
        vec![
            ("objectClass", &["organizationalUnit"]),
            ("ou", &["upstream"]),
        ],
    )
    .await;
    (tree, base, ldap)
}

fn field<'a>(row: &'a Row, name: &str) -> &'a str {
    row.fields
        .get(name)
        .unwrap_or_else(|| panic!("row {} has no field {name}: {row:?}", row.number))
}

#[tokio::test]
async fn ldap_reads_an_upstream_subtree_with_a_filter_and_joins_multiple_values() {
    let (tree, base, mut ldap) = upstream_tree("impldap").await;
    person(
        &mut ldap,
        &base,
        "ada",
        vec![
            ("sn", &["Lovelace"]),
            ("givenName", &["Ada"]),
            ("employeeNumber", &["1001"]),
            ("employeeType", &["staff"]),
            ("mail", &["ada@example.org", "a.lovelace@example.org"]),
        ],
    )
    .await;
    person(
        &mut ldap,
        &base,
        "joerg",
        vec![
            ("sn", &["Müller-Weiß"]),
            ("givenName", &["Jörg"]),
            ("employeeNumber", &["1002"]),
            ("employeeType", &["staff"]),
        ],
    )
    .await;
    person(
        &mut ldap,
        &base,
        "visitor",
        vec![("sn", &["Visitor"]), ("employeeType", &["external"])],
    )
    .await;

    let filter = "(&(objectClass=inetOrgPerson)(employeeType=staff))";
    let (reader, password) = upstream(&base, Some(filter));
    let mut rows = read_ldap(&reader, Some(&password), None)
        .await
        .expect("the upstream subtree reads");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let mut numbers: Vec<usize> = rows.iter().map(|r| r.number).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2], "rows are numbered by position");
    rows.sort_by(|a, b| field(a, "uid").cmp(field(b, "uid")));
    let (ada, joerg) = (&rows[0], &rows[1]);
    assert_eq!(field(ada, "dn"), format!("uid=ada,{base}"));
    assert_eq!(field(ada, "employeeNumber"), "1001");
    let mut mails: Vec<&str> = field(ada, "mail").split('\n').collect();
    mails.sort();
    assert_eq!(
        mails,
        ["a.lovelace@example.org", "ada@example.org"],
        "multiple values are joined with a line break"
    );
    assert_eq!(field(ada, "objectClass"), "inetOrgPerson");
    assert_eq!(field(joerg, "givenName"), "Jörg");
    assert_eq!(field(joerg, "sn"), "Müller-Weiß");
    assert!(
        !ada.fields.contains_key("entryCSN"),
        "operational attributes are not read: {ada:?}"
    );

    // The default filter reads every entry below the base, the base included; anonymously
    // too (the dev directory allows anonymous reads).
    let anonymous = LdapReader {
        bind_dn: None,
        filter: None,
        ..reader.clone()
    };
    let all = read_ldap(&anonymous, None, None)
        .await
        .expect("anonymous read");
    let mut dns: Vec<&str> = all.iter().map(|r| field(r, "dn")).collect();
    dns.sort();
    assert_eq!(
        dns,
        [
            base.clone(),
            format!("uid=ada,{base}"),
            format!("uid=joerg,{base}"),
            format!("uid=visitor,{base}"),
        ]
    );

    // A filter that matches nothing is zero rows, not an error.
    let (none, password) = upstream(&base, Some("(employeeType=nobody)"));
    assert_eq!(read_ldap(&none, Some(&password), None).await.unwrap(), []);
    tree.cleanup().await;
}

#[tokio::test]
async fn ldap_reads_more_entries_than_one_page_and_the_server_size_limit() {
    let (tree, base, mut ldap) = upstream_tree("imppage").await;
    const N: usize = 1203;
    for i in 0..N {
        let uid = format!("p{i:04}");
        person(&mut ldap, &base, &uid, vec![("sn", &["Page"])]).await;
    }
    // Pages of 500: three of them.
    let (reader, password) = upstream(&base, Some("(objectClass=inetOrgPerson)"));
    let rows = read_ldap(&reader, Some(&password), None)
        .await
        .expect("paged read");
    assert_eq!(rows.len(), N);
    let mut uids: Vec<&str> = rows.iter().map(|r| field(r, "uid")).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), N, "every entry once");
    assert_eq!(
        rows.iter().map(|r| r.number).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>()
    );

    // Anonymous binds have slapd's default size limit (500), which also caps paged searches:
    // the search fails instead of returning the first 500 as if they were everybody.
    let anonymous = LdapReader {
        bind_dn: None,
        ..reader
    };
    let e = read_ldap(&anonymous, None, None).await.unwrap_err();
    assert!(matches!(e, ReadError::LdapSearch { .. }), "{e}");
    assert!(e.to_string().contains("size limit was exceeded"), "{e}");
    tree.cleanup().await;
}

#[tokio::test]
async fn ldap_failures_are_errors_never_empty_lists() {
    let tree = TestTree::new("impldaperr").await;
    let (reader, password) = upstream(&tree.dn, None);

    // Nobody listens.
    let gone = LdapReader {
        url: format!("ldap://127.0.0.1:{}", free_port()),
        ..reader.clone()
    };
    let e = read_ldap(&gone, Some(&password), None).await.unwrap_err();
    assert!(matches!(e, ReadError::LdapUnreachable { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("cannot reach the LDAP server ldap://127.0.0.1:"),
        "{e}"
    );

    // A wrong password: refused, and the password is in no message.
    let wrong = "not-the-password-4711";
    let e = read_ldap(&reader, Some(wrong), None).await.unwrap_err();
    assert!(matches!(e, ReadError::LdapBind { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("invalid credentials"), "{text}");
    assert!(text.contains(reader.bind_dn.as_deref().unwrap()), "{text}");
    assert!(!text.contains(wrong), "{text}");

    // A base that does not exist.
    let missing = LdapReader {
        base_dn: format!("ou=nowhere,{}", tree.dn),
        ..reader.clone()
    };
    let e = read_ldap(&missing, Some(&password), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ReadError::LdapNoSuchBase { .. }), "{e}");
    assert!(e.to_string().contains("ou=nowhere"), "{e}");

    // A broken filter.
    let bad = LdapReader {
        filter: Some("(uid=".into()),
        ..reader.clone()
    };
    let e = read_ldap(&bad, Some(&password), None).await.unwrap_err();
    assert!(matches!(e, ReadError::LdapSearch { .. }), "{e}");
    assert!(e.to_string().contains("not valid"), "{e}");

    // StartTLS to the dev slapd (which offers it) without a CA: its certificate, from the dev
    // CA, is checked against the system's CAs and refused in the handshake, before the bind;
    // never a silent plaintext or unverified bind. With the dev CA the same reader reads.
    let starttls = LdapReader {
        start_tls: true,
        ..reader.clone()
    };
    let e = read_ldap(&starttls, Some(&password), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ReadError::LdapTls { .. }), "{e}");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    assert!(!e.to_string().contains(&password), "{e}");
    let ca = std::fs::read_to_string(&dev_env()["LDAP_TLS_CA_FILE"]).unwrap();
    assert_eq!(
        read_ldap(&starttls, Some(&password), Some(&ca))
            .await
            .unwrap(),
        read_ldap(&reader, Some(&password), None).await.unwrap(),
    );

    // ldaps:// to the plaintext port fails (in the TLS handshake).
    let ldaps = LdapReader {
        url: reader.url.replacen("ldap://", "ldaps://", 1),
        ..reader.clone()
    };
    let e = read_ldap(&ldaps, Some(&password), None).await.unwrap_err();
    assert!(matches!(e, ReadError::LdapTls { .. }), "{e}");
    assert!(e.to_string().contains("handshake"), "{e}");

    // Settings that cannot work are refused before connecting.
    let e = read_ldap(&reader, None, None).await.unwrap_err();
    assert!(matches!(e, ReadError::Settings(_)), "{e}");
    assert!(e.to_string().contains("no bind password"), "{e}");
    let e = read_ldap(
        &reader,
        Some(&password),
        Some("-----BEGIN CERTIFICATE-----"),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("would not use TLS"), "{e}");
    let e = read_ldap(&starttls, Some(&password), Some("no pem here"))
        .await
        .unwrap_err();
    assert!(matches!(e, ReadError::LdapTls { .. }), "{e}");
    assert!(e.to_string().contains("holds no certificate"), "{e}");
    tree.cleanup().await;
}

/// The password in a `mysql://user:password@…` DSN.
fn password_of(dsn: &str) -> String {
    let userinfo = dsn
        .split_once("://")
        .and_then(|(_, r)| r.rsplit_once('@'))
        .map(|(u, _)| u)
        .unwrap();
    userinfo.split_once(':').unwrap().1.to_string()
}

/// Drops scratch tables of test processes that are gone.
async fn remove_stale_tables(conn: &mut mysql_async::Conn) {
    let tables: Vec<String> = conn
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'roster\\_imp\\_%'")
        .await
        .unwrap();
    for t in tables {
        let pid = t.rsplit('_').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = conn.query_drop(format!("DROP TABLE IF EXISTS `{t}`")).await;
        }
    }
}

/// A scratch "HR" table of this test process in the dev MariaDB. slurmdbd's writer may create
/// tables only in the accounting database, so the table lives there, under a name no Slurm
/// table has (`roster_imp_<name>_<pid>`); slurmdbd ignores tables it does not know.
async fn hr_table(name: &str) -> (mysql_async::Conn, String) {
    let env = dev_env();
    let opts = mysql_async::Opts::from_url(&env["SLURMDB_ADMIN_URL"]).unwrap();
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    remove_stale_tables(&mut conn).await;
    let table = format!("roster_imp_{name}_{}", std::process::id());
    conn.query_drop(format!("DROP TABLE IF EXISTS `{table}`"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "CREATE TABLE `{table}` (
            employee_id INT UNSIGNED PRIMARY KEY,
            given_name VARCHAR(64) NOT NULL,
            family_name VARCHAR(64) NOT NULL,
            email VARCHAR(128) NULL,
            entry_date DATE NULL,
            leaves_at DATETIME NULL,
            fte DECIMAL(4,2) NULL,
            weight DOUBLE NULL,
            badge VARBINARY(16) NULL
        ) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .await
    .unwrap();
    conn.exec_drop(
        format!("INSERT INTO `{table}` VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        vec![
            1001u32.into(), "Jörg".into(), "Müller-Weiß".into(), "jm@example.org".into(),
            "2021-04-01".into(), "2025-03-31 18:00:00".into(), "0.75".into(), 1.5f64.into(),
            vec![0xffu8, 0x00, 0x10].into(),
            1002u32.into(), "Ærøskøbing".into(), "Çelik".into(), mysql_async::Value::NULL,
            mysql_async::Value::NULL, mysql_async::Value::NULL, mysql_async::Value::NULL,
            mysql_async::Value::NULL, mysql_async::Value::NULL,
            1003u32.into(), "Ada".into(), "Lovelace".into(), "".into(),
            "1815-12-10".into(), mysql_async::Value::NULL, "1.00".into(), mysql_async::Value::NULL,
            b"ABC".to_vec().into(),
        ],
    )
    .await
    .unwrap();
    (conn, table)
}

#[tokio::test]
async fn sql_reads_an_hr_table_with_umlauts_and_nulls_as_text() {
    let (mut admin_conn, table) = hr_table("hr").await;
    let env = dev_env();
    let rows = read_sql(
        &env["SLURMDB_RO_URL"],
        &format!("SELECT * FROM `{table}` ORDER BY employee_id"),
    )
    .await
    .expect("the read-only user reads the table");
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(rows.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2, 3]);
    let text = |r: &Row| -> Vec<(String, String)> {
        r.fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let expect = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        text(&rows[0]),
        expect(&[
            ("badge", "/wAQ"),
            ("email", "jm@example.org"),
            ("employee_id", "1001"),
            ("entry_date", "2021-04-01"),
            ("family_name", "Müller-Weiß"),
            ("fte", "0.75"),
            ("given_name", "Jörg"),
            ("leaves_at", "2025-03-31 18:00:00"),
            ("weight", "1.5"),
        ])
    );
    assert_eq!(
        text(&rows[1]),
        expect(&[
            ("badge", ""),
            ("email", ""),
            ("employee_id", "1002"),
            ("entry_date", ""),
            ("family_name", "Çelik"),
            ("fte", ""),
            ("given_name", "Ærøskøbing"),
            ("leaves_at", ""),
            ("weight", ""),
        ]),
        "NULL is the empty string"
    );
    assert_eq!(field(&rows[2], "badge"), "ABC", "UTF-8 bytes stay text");
    assert_eq!(field(&rows[2], "entry_date"), "1815-12-10");

    // Aliases name the fields; an empty result is zero rows.
    let rows = read_sql(
        &env["SLURMDB_RO_URL"],
        &format!("SELECT employee_id AS id, CONCAT(given_name, ' ', family_name) AS name FROM `{table}` WHERE employee_id = 1002"),
    )
    .await
    .unwrap();
    assert_eq!(field(&rows[0], "name"), "Ærøskøbing Çelik");
    assert_eq!(field(&rows[0], "id"), "1002");
    let none = read_sql(
        &env["SLURMDB_RO_URL"],
        &format!("SELECT * FROM `{table}` WHERE employee_id = 0"),
    )
    .await
    .unwrap();
    assert_eq!(none, []);
    admin_conn
        .query_drop(format!("DROP TABLE `{table}`"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sql_queries_that_cannot_give_one_clear_result_are_errors() {
    let (mut admin_conn, table) = hr_table("hrerr").await;
    let env = dev_env();
    let admin_url = &env["SLURMDB_ADMIN_URL"];
    let admin_password = password_of(admin_url);

    // Two columns of the same name.
    let e = read_sql(
        admin_url,
        &format!("SELECT employee_id, given_name AS employee_id FROM `{table}`"),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ReadError::SqlDuplicateColumn { .. }), "{e}");
    assert!(
        e.to_string().contains("\"employee_id\" (columns 1 and 2)"),
        "{e}"
    );

    // The session is read-only: even the writer cannot write through a reader.
    let e = read_sql(
        admin_url,
        &format!(
            "INSERT INTO `{table}` (employee_id, given_name, family_name) VALUES (9, 'x', 'y')"
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ReadError::SqlQuery { .. }), "{e}");
    let count: Option<u64> = admin_conn
        .query_first(format!("SELECT COUNT(*) FROM `{table}`"))
        .await
        .unwrap();
    assert_eq!(count, Some(3), "nothing was written");

    // A statement without a result set, several statements, a syntax error, a missing table.
    for query in [
        "DO 1".to_string(),
        "SELECT 1; SELECT 2".to_string(),
        format!("SELEKT * FROM `{table}`"),
        "SELECT * FROM roster_no_such_table".to_string(),
    ] {
        let e = read_sql(admin_url, &query).await.unwrap_err();
        assert!(matches!(e, ReadError::SqlQuery { .. }), "{query}: {e}");
        assert!(!e.to_string().contains(&admin_password), "{e}");
    }
    admin_conn
        .query_drop(format!("DROP TABLE `{table}`"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sql_connection_failures_are_errors_without_the_password() {
    let env = dev_env();
    let ro = &env["SLURMDB_RO_URL"];
    let password = password_of(ro);

    // Nobody listens.
    let rest = ro.rsplit_once('@').unwrap().1;
    let port = rest.split(['/', ':']).nth(1).unwrap();
    let gone = ro.replacen(&format!(":{port}/"), &format!(":{}/", free_port()), 1);
    let e = read_sql(&gone, "SELECT 1").await.unwrap_err();
    assert!(matches!(e, ReadError::SqlUnreachable { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("cannot connect to the database server 127.0.0.1:"),
        "{e}"
    );
    assert!(!e.to_string().contains(&password), "{e}");

    // A wrong password.
    let wrong = ro.replacen(&password, "wrong-password-4711", 1);
    let e = read_sql(&wrong, "SELECT 1").await.unwrap_err();
    assert!(matches!(e, ReadError::SqlLogin { .. }), "{e}");
    assert!(e.to_string().contains("roster_ro"), "{e}");
    assert!(!e.to_string().contains("wrong-password-4711"), "{e}");

    // A database the user may not use.
    let other_db = ro.replacen("/slurm_acct_db", "/mysql", 1);
    let e = read_sql(&other_db, "SELECT 1").await.unwrap_err();
    assert!(matches!(e, ReadError::SqlLogin { .. }), "{e}");
    assert!(!e.to_string().contains(&password), "{e}");

    // Not a MySQL DSN.
    let e = read_sql(&ro.replacen("mysql://", "postgres://", 1), "SELECT 1")
        .await
        .unwrap_err();
    assert!(matches!(e, ReadError::SqlDsn(_)), "{e}");
    assert!(!e.to_string().contains(&password), "{e}");
    let e = read_sql("mysql://user:sekret@[bad/x", "SELECT 1")
        .await
        .unwrap_err();
    assert!(matches!(e, ReadError::SqlDsn(_)), "{e}");
    assert!(!e.to_string().contains("sekret"), "{e}");
}

/// `sacctmgr -i ARGS` with the dev SLURM_CONF: whether it succeeded, and what it said.
fn sacctmgr(args: &[&str]) -> (bool, String) {
    let out = Command::new("sacctmgr")
        .arg("-i")
        .args(args)
        .env("SLURM_CONF", &dev_env()["SLURM_CONF"])
        .output()
        .expect("sacctmgr runs");
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said.into_owned())
}

/// `sacctmgr -i add ARGS`, which must succeed (or find it there already).
fn sacctmgr_add(args: &[&str]) {
    let (ok, said) = sacctmgr(&[&["add"], args].concat());
    assert!(ok || said.contains("Nothing new added"), "{said}");
}

#[tokio::test]
async fn sql_reads_users_and_accounts_from_the_slurm_accounting_database() {
    let env = dev_env();
    let pid = std::process::id();
    let cluster = format!("timp{pid}");
    let (account, user) = (format!("imp{pid}a"), format!("imp{pid}u"));
    let on_cluster = format!("cluster={cluster}");
    sacctmgr_add(&["cluster", &cluster]);
    sacctmgr_add(&[
        "account",
        &account,
        &on_cluster,
        "description=import test",
        "organization=roster",
    ]);
    sacctmgr_add(&["user", &user, &format!("account={account}"), &on_cluster]);

    let query = |cluster: &str| {
        format!(
            "SELECT u.name AS user, a.acct AS account, a.is_def AS is_default \
             FROM user_table u JOIN `{cluster}_assoc_table` a ON a.user = u.name \
             WHERE u.deleted = 0 AND a.deleted = 0 AND u.name LIKE 'imp{pid}%' \
             ORDER BY u.name, a.acct"
        )
    };
    let rows = read_sql(&env["SLURMDB_RO_URL"], &query(&cluster))
        .await
        .expect("the read-only user reads the accounting database");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(field(&rows[0], "user"), user);
    assert_eq!(field(&rows[0], "account"), account);
    assert_eq!(field(&rows[0], "is_default"), "1");
    assert_eq!(rows[0].number, 1);

    // The dev cluster's tables read the same way (this test's names are not there).
    let rows = read_sql(&env["SLURMDB_RO_URL"], &query(&env["SLURM_CLUSTER"]))
        .await
        .expect("the dev cluster's association table reads");
    assert_eq!(rows, []);

    // Leave nothing behind (slurmdbd marks them deleted).
    sacctmgr(&["delete", "user", &user, &on_cluster]);
    sacctmgr(&["delete", "account", &account, &on_cluster]);
    sacctmgr(&["delete", "cluster", &cluster]);
}
