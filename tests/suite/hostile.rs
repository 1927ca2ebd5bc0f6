//! The hostile-input catalogue (issue #13): one table of inputs an attacker or a broken export
//! could put in front of Roster, pushed through the whole pipeline in both modes.
//!
//! - File mode: `roster apply` of a converged baseline plus one hostile case, against the real
//!   slapd, slurmdbd and the Gold test server. Every case must end with the documented exit code,
//!   a message naming the object, field and reason, and nothing written: the LDAP subtree's
//!   `entryCSN`s, slurmdbd's `txn_table` and Gold's request log (queries only) unchanged.
//! - Through the API server: the same documents with a real `kubectl`. Admission refuses what the
//!   schema refuses (and nothing is stored); what only Roster can judge (claims on another
//!   object's username or uid) is marked Conflict by the operator, which writes nothing for it.
//!   File mode refuses every case admission refuses.

use crate::support;

use std::time::{Duration, Instant};

use roster_gold_server::{GoldServer, Options};
use serde_json::{Value, json};
use support::*;

/// Where a case is refused through the API server.
#[derive(Clone, Debug)]
enum Api {
    /// `kubectl apply` fails with a message containing this; nothing is stored.
    Refused(String),
    /// Admission accepts it; the operator sets this phase (and its condition) on the last
    /// object of the case, of this kind in this namespace, and writes nothing for it.
    Phase(&'static str, &'static str, &'static str),
    /// Not an API object (files, CSV paths, configuration): file mode only.
    FileOnly,
}

/// One row of the catalogue.
struct Case {
    name: String,
    /// Files beside the baseline manifest: (file name, bytes).
    files: Vec<(String, Vec<u8>)>,
    /// Extra configuration lines (file mode).
    config: Option<String>,
    code: i32,
    /// What the output must contain.
    says: Vec<String>,
    api: Api,
}

fn doc(kind: &str, ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "roster.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

/// Documents as one YAML stream (JSON is YAML; control characters stay escaped).
fn stream(docs: &[Value]) -> Vec<u8> {
    docs.iter()
        .map(|d| format!("---\n{d}\n"))
        .collect::<String>()
        .into_bytes()
}

fn person(ns: &str, name: &str) -> Value {
    doc(
        "Person",
        ns,
        name,
        json!({"givenName": "Hostile", "familyName": "Tester"}),
    )
}

/// Go's `%q` of a string, as the API server and Roster quote refused values.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// LDAP DN and filter metacharacters, NUL and control characters.
const METACHARACTERS: &[&str] = &[
    "a,b",
    "a+b",
    "cn=x",
    "#x",
    "a\\b",
    "a\"b",
    "<>",
    ";",
    "admin)(uid=*",
    "*",
    "(",
    "\\00",
    "a\u{0}b",
    "a\u{1b}[2J",
    "a\r\nb",
];

/// The catalogue. `p` prefixes every name (Slurm and Gold names are global), `base` is the
/// baseline account's username and `proj` its project.
fn catalogue(p: &str) -> Vec<Case> {
    let base = format!("{p}a");
    let proj = format!("{p}proj");
    let mut cases = vec![];
    let mut case = |name: String, docs: Vec<Value>, code: i32, says: Vec<String>, api: Api| {
        cases.push(Case {
            name,
            files: vec![("hostile.yaml".into(), stream(&docs))],
            config: None,
            code,
            says,
            api,
        });
    };
    for m in METACHARACTERS {
        case(
            format!("metadata.name {m:?}"),
            vec![doc(
                "Account",
                "physics",
                m,
                json!({"person": base, "username": format!("{p}z")}),
            )],
            1,
            vec![
                format!("metadata.name: Invalid value: {}", quoted(m)),
                "a lowercase RFC 1123 subdomain".into(),
            ],
            Api::Refused("metadata.name".into()),
        );
        case(
            format!("username {m:?}"),
            vec![doc(
                "Account",
                "physics",
                &format!("{p}m"),
                json!({"person": base, "username": m}),
            )],
            1,
            vec![format!(
                "Account physics/{p}m: spec.username: Invalid value: \"string\": username must be 1-32 characters"
            )],
            Api::Refused("username must be 1-32 characters".into()),
        );
        case(
            format!("groupName {m:?}"),
            vec![doc(
                "Project",
                "physics",
                &format!("{p}g"),
                json!({"groupName": m}),
            )],
            1,
            vec![format!(
                "Project physics/{p}g: spec.groupName: Invalid value: \"string\": groupName must be"
            )],
            Api::Refused("groupName must be 1-32 characters".into()),
        );
        case(
            format!("project member {m:?}"),
            vec![doc(
                "Project",
                "physics",
                &format!("{p}g"),
                json!({"members": [m]}),
            )],
            1,
            vec![format!(
                "spec.members[0]: Invalid value: {}: spec.members[0] in body should match",
                quoted(m)
            )],
            Api::Refused("spec.members[0]".into()),
        );
    }
    // Control characters and overlong values in names, gecos, mail and SSH keys.
    let texts: Vec<(&str, Value, String)> = vec![
        (
            "NUL in givenName",
            json!({"givenName": "A\u{0}B", "familyName": "T"}),
            "spec.givenName: Invalid value: \"A\\x00B\": spec.givenName in body should match"
                .into(),
        ),
        (
            "ESC in familyName",
            json!({"givenName": "A", "familyName": "T\u{1b}]0;pwned\u{7}"}),
            "spec.familyName: Invalid value: \"T\\x1b]0;pwned\\a\"".into(),
        ),
        (
            "CRLF in displayName (gecos)",
            json!({"givenName": "A", "familyName": "T", "displayName": "A\r\nuid: root"}),
            "spec.displayName: Invalid value: \"A\\r\\nuid: root\"".into(),
        ),
        (
            "10 KB displayName (gecos)",
            json!({"givenName": "A", "familyName": "T", "displayName": "g".repeat(10 * 1024)}),
            "spec.displayName: Too long: may not be more than 256 bytes".into(),
        ),
        (
            "CRLF in mail",
            json!({"givenName": "A", "familyName": "T", "email": "a@b.c\r\nBcc: x@y.z"}),
            "spec.email: Invalid value: \"a@b.c\\r\\nBcc: x@y.z\"".into(),
        ),
    ];
    for (what, spec, says) in texts {
        case(
            what.into(),
            vec![doc("Person", "physics", &format!("{p}t"), spec)],
            1,
            vec![format!("Person physics/{p}t: "), says.clone()],
            Api::Refused(says.split(": ").next().unwrap().into()),
        );
    }
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBc0K4wJ9yV3zD0nL6r2bX5mQ8tW1uY7iO3pA9sE4fGh";
    let account_with = |spec: Value| {
        let mut s = json!({"person": base, "username": format!("{p}k")});
        s.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        vec![doc("Account", "physics", &format!("{p}k"), s)]
    };
    for (what, spec, says, api) in [
        (
            "a second key line in an SSH key",
            json!({"sshPublicKeys": [format!("{key} me\nssh-rsa AAAAB3Nza evil")]}),
            "spec.sshPublicKeys[0]: Invalid value:".to_string(),
            Api::Refused("spec.sshPublicKeys[0]".into()),
        ),
        (
            "control characters in an SSH key comment",
            json!({"sshPublicKeys": [format!("{key} me\u{1b}[8m\u{8}\u{8}")]}),
            "spec.sshPublicKeys[0]: Invalid value:".into(),
            Api::Refused("spec.sshPublicKeys[0]".into()),
        ),
        (
            "1 MB SSH key",
            json!({"sshPublicKeys": [format!("{key}{}", "A".repeat(1024 * 1024))]}),
            "spec.sshPublicKeys[0]: Too long: may not be more than 16384 bytes".into(),
            Api::Refused("Too long".into()),
        ),
        (
            "33-character username",
            json!({"username": "u".repeat(33)}),
            "spec.username: Too long: may not be more than 32 bytes".into(),
            Api::Refused("spec.username: Too long".into()),
        ),
        (
            "reserved username",
            json!({"username": "root"}),
            "spec.username: Invalid value: \"string\": username is reserved for a system account"
                .into(),
            Api::Refused("username is reserved".into()),
        ),
        (
            "NUL in lockReason",
            json!({"locked": true, "lockReason": "x\u{0}"}),
            "spec.lockReason: Invalid value: \"x\\x00\"".into(),
            Api::Refused("spec.lockReason".into()),
        ),
        // Path traversal in home directories.
        (
            "relative home directory",
            json!({"homeDirectory": "../../etc"}),
            "spec.homeDirectory: Invalid value: \"../../etc\"".into(),
            Api::Refused("spec.homeDirectory".into()),
        ),
        (
            "home directory /home/../etc",
            json!({"homeDirectory": "/home/../etc"}),
            "homeDirectory must not contain '.' or '..' path segments".into(),
            Api::Refused("homeDirectory must not contain".into()),
        ),
        (
            "home directory /etc",
            json!({"homeDirectory": "/etc"}),
            "homeDirectory must not be in a system directory".into(),
            Api::Refused("homeDirectory must not be in a system directory".into()),
        ),
        (
            "home directory /root/.ssh",
            json!({"homeDirectory": "/root/.ssh"}),
            "homeDirectory must not be in a system directory".into(),
            Api::Refused("homeDirectory must not be in a system directory".into()),
        ),
        (
            "home directory //etc",
            json!({"homeDirectory": "//etc"}),
            "homeDirectory must name a directory below / without empty segments".into(),
            Api::Refused("without empty segments".into()),
        ),
        (
            "home directory /",
            json!({"homeDirectory": "/"}),
            "homeDirectory must name a directory below / without empty segments".into(),
            Api::Refused("without empty segments".into()),
        ),
        (
            "NUL in a home directory",
            json!({"homeDirectory": "/home/a\u{0}/../../etc"}),
            "spec.homeDirectory: Invalid value: \"/home/a\\x00/../../etc\"".into(),
            Api::Refused("spec.homeDirectory".into()),
        ),
    ] {
        case(
            what.into(),
            account_with(spec),
            1,
            vec![format!("Account physics/{p}k: "), says],
            api,
        );
    }
    // sacctmgr argument injection: every Slurm field of a Project.
    for (what, spec, says) in [
        (
            "member 'alice Account=root'",
            json!({"members": ["alice Account=root"]}),
            "spec.members[0]: Invalid value: \"alice Account=root\"",
        ),
        (
            "leader '-i'",
            json!({"leaders": ["-i"]}),
            "spec.leaders[0]: Invalid value: \"-i\"",
        ),
        (
            "parent 'where'-style keyword list 'root where name=x'",
            json!({"slurm": {"parent": "root where name=x"}}),
            "spec.slurm.parent: Invalid value: \"root where name=x\"",
        ),
        (
            "qos 'name=x'",
            json!({"slurm": {"qos": ["name=x"]}}),
            "spec.slurm.qos[0]: Invalid value: \"name=x\"",
        ),
        (
            "qos list 'a,b'",
            json!({"slurm": {"qos": ["normal,high"]}}),
            "spec.slurm.qos[0]: Invalid value: \"normal,high\"",
        ),
        (
            "partition with a space",
            json!({"slurm": {"partitions": ["gpu Account=root"]}}),
            "spec.slurm.partitions[0]: Invalid value: \"gpu Account=root\"",
        ),
        (
            "cluster list 'a,b'",
            json!({"slurm": {"clusters": ["a,b"]}}),
            "spec.slurm.clusters[0]: Invalid value: \"a,b\"",
        ),
        (
            "negative GrpTRES",
            json!({"slurm": {"limits": {"grpTRES": {"cpu": -7}}}}),
            "spec.slurm.limits.grpTRES.cpu: Invalid value: -7: spec.slurm.limits.grpTRES.cpu in body should be greater than or equal to 0",
        ),
        (
            "negative GrpJobs",
            json!({"slurm": {"limits": {"grpJobs": -1}}}),
            "spec.slurm.limits.grpJobs: Invalid value: -1",
        ),
        (
            "description with CR LF",
            json!({"description": "x\r\nadd account name=root2"}),
            "spec.description: Invalid value: \"x\\r\\nadd account name=root2\"",
        ),
    ] {
        case(
            format!("sacctmgr: {what}"),
            vec![doc("Project", "physics", &proj, spec)],
            1,
            vec![format!("Project physics/{proj}: {says}")],
            Api::Refused(says.split(": ").next().unwrap().into()),
        );
    }
    // A TRES name carrying another setting: the schema cannot check map keys (CEL cost), so the
    // Slurm side refuses the Project before any sacctmgr call.
    let mut tres = baseline(p).remove(2);
    tres["spec"]["slurm"]["limits"]["grpTRES"] = json!({"cpu=1,mem": 5, "cpu": 100});
    case(
        "sacctmgr: TRES name 'cpu=1,mem'".into(),
        vec![tres],
        3,
        vec![
            format!("Project physics/{proj}"),
            "InvalidSlurmName".into(),
            "\"cpu=1,mem\"".into(),
        ],
        Api::FileOnly,
    );
    // Duplicate and conflicting objects.
    case(
        "the same object twice".into(),
        vec![
            person("physics", &format!("{p}d")),
            person("physics", &format!("{p}d")),
        ],
        1,
        vec![format!("Person physics/{p}d: declared twice (first at ")],
        Api::FileOnly,
    );
    case(
        "another Account claims the baseline username".into(),
        vec![doc(
            "Account",
            "physics",
            &format!("{p}b"),
            json!({"person": base, "username": base}),
        )],
        3,
        vec![format!("Account physics/{p}b: Conflict"), base.clone()],
        Api::Phase("account", "physics", "Conflict"),
    );
    case(
        "another namespace claims the baseline username".into(),
        vec![
            person("chemistry", &base),
            doc(
                "Account",
                "chemistry",
                &base,
                json!({"person": base, "username": base}),
            ),
        ],
        3,
        vec![format!("Account chemistry/{base}: Conflict"), base.clone()],
        Api::Phase("account", "chemistry", "Conflict"),
    );
    case(
        "another Account claims the baseline uid".into(),
        vec![doc(
            "Account",
            "physics",
            &format!("{p}u"),
            json!({"person": base, "username": format!("{p}u"), "uidNumber": 24999}),
        )],
        3,
        vec![format!("Account physics/{p}u: Conflict"), "24999".into()],
        Api::Phase("account", "physics", "Conflict"),
    );
    // A system uid or gid declared for a new entry (uid 1 is daemon, gid 27 sudo on Debian).
    case(
        "a new Account declares a system uid".into(),
        vec![
            person("physics", &format!("{p}s")),
            doc(
                "Account",
                "physics",
                &format!("{p}s"),
                json!({"person": format!("{p}s"), "username": format!("{p}s"), "uidNumber": 1}),
            ),
        ],
        3,
        vec![
            format!("Account physics/{p}s: Invalid"),
            "spec.uidNumber 1 is outside the configured uidRange".into(),
        ],
        Api::Phase("account", "physics", "Invalid"),
    );
    case(
        "a new Project declares a system gid".into(),
        vec![doc(
            "Project",
            "physics",
            &format!("{p}wheel"),
            json!({"gidNumber": 27}),
        )],
        3,
        vec![
            format!("Project physics/{p}wheel: Invalid"),
            "spec.gidNumber 27 is outside the configured gidRange".into(),
        ],
        Api::Phase("project", "physics", "Invalid"),
    );
    case(
        "a Project claims the baseline account's personal group".into(),
        vec![doc(
            "Project",
            "physics",
            &format!("{p}pg"),
            json!({"groupName": base}),
        )],
        3,
        vec![format!("Project physics/{p}pg: Conflict"), base.clone()],
        Api::Phase("project", "physics", "Conflict"),
    );
    // YAML: duplicate keys, bombs, depth, size, encoding.
    let raw = |name: &str, text: Vec<u8>, says: &[&str]| Case {
        name: name.into(),
        files: vec![("hostile.yaml".into(), text)],
        config: None,
        code: 1,
        says: says.iter().map(|s| s.to_string()).collect(),
        api: Api::FileOnly,
    };
    cases.push(raw(
        "duplicate YAML keys",
        format!("apiVersion: roster.io/v1alpha1\nkind: Account\nmetadata: {{name: {p}k, namespace: physics}}\nspec: {{person: {base}, username: {p}k, username: root}}\n").into_bytes(),
        &["not valid YAML", "duplicate mapping key: username"],
    ));
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        bomb.push_str(&format!(
            "{next}: &{next} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    cases.push(raw(
        "billion laughs",
        bomb.into_bytes(),
        &["not valid YAML", "budget breached"],
    ));
    cases.push(raw(
        "100,000 nested lists",
        ("[".repeat(100_000) + &"]".repeat(100_000)).into_bytes(),
        &["not valid YAML"],
    ));
    cases.push(raw(
        "non-UTF-8 manifest",
        b"apiVersion: roster.io/v1alpha1\nkind: Person\nmetadata: {name: x, namespace: physics}\nspec: {givenName: J\xfcrgen, familyName: M}\n".to_vec(),
        &["cannot read: not UTF-8 (the first invalid byte is on line 4)"],
    ));
    // A bad configuration: home directory templates that leave /home.
    for template in [
        "/home/../{username}",
        "/{username}/../../etc",
        "home/{username}",
    ] {
        cases.push(Case {
            name: format!("home directory template {template:?}"),
            files: vec![],
            config: Some(format!("defaults:\n  homeDirectory: \"{template}\"\n")),
            code: 1,
            says: vec!["defaults.homeDirectory".into()],
            api: Api::FileOnly,
        });
    }
    // Imports: a CSV export that is not UTF-8, and one whose rows carry hostile values.
    let import = |csv_path: &str, extra: &str| {
        format!("apiVersion: roster.io/v1alpha1\nkind: ImportSource\nmetadata: {{name: hr, namespace: physics}}\nspec:\n  sourceUID: {p}-hr\n  reader:\n    type: Csv\n    csv: {{path: {csv_path}}}\n  mapping: {{id: employeeNumber, first: givenName, last: familyName, user: username, mail: email}}\n  recordUID: <employeeNumber>\n  mode: AddModifyOnly\n{extra}").into_bytes()
    };
    cases.push(Case {
        name: "non-UTF-8 CSV import".into(),
        files: vec![
            ("import.yaml".into(), import("people.csv", "")),
            ("people.csv".into(), {
                let mut b = format!("id,first,last,user,mail\n1,Ann,Ok,{p}i1,a@b.c\n").into_bytes();
                b.extend_from_slice(format!("2,J\u{fc}rgen,M,{p}i2,j@b.c\n").as_bytes());
                // Latin-1 instead of UTF-8: ü as the single byte 0xfc.
                let at = b.iter().position(|&c| c == 0xc3).unwrap();
                b.splice(at..at + 2, [0xfc]);
                b
            }),
        ],
        config: None,
        code: 3,
        says: vec![
            "ImportSource physics/hr: SourceUnreachable".into(),
            "the CSV file is not UTF-8 (the first invalid byte is on line 3)".into(),
        ],
        api: Api::FileOnly,
    });
    let mut rows = String::from("id,first,last,user,mail\n");
    rows.push_str(&format!("1,Ann,Ok,{p}i1,a@b.c\n"));
    rows.push_str("2,Bob,X,\"admin)(uid=*\",b@b.c\n");
    rows.push_str(&format!("3,\"E\u{1b}[31mve\",Y,{p}i3,e@b.c\n"));
    rows.push_str("4,Dan,Z,\"a,b\",d@b.c\n");
    rows.push_str(&format!("5,Fay,Q,{p}i5,\"f@b.c\r\nBcc: x@y.z\"\n"));
    rows.push_str(&format!("6,Gil,{},{p}i6,g@b.c\n", "R".repeat(10 * 1024)));
    cases.push(Case {
        name: "hostile values in CSV rows".into(),
        files: vec![
            ("import.yaml".into(), import("people.csv", "")),
            ("people.csv".into(), rows.into_bytes()),
        ],
        config: None,
        code: 3,
        says: vec![
            "x row 3: Person physics/admin)(uid=*: metadata.name: Invalid value".into(),
            "x row 4: Person physics/".into(),
            "spec.givenName: Invalid value: \"E\\x1b[31mve\"".into(),
            "x row 5: Person physics/a,b: metadata.name".into(),
            "spec.email: Invalid value: \"f@b.c\\".into(),
            "spec.familyName: Too long: may not be more than 128 bytes".into(),
            "Aborted: 5 bad row(s), more than toleratedErrors (0); nothing was changed".into(),
        ],
        api: Api::FileOnly,
    });
    cases
}

// ---------------------------------------------------------------------------------------------
// File mode

/// The baseline: a Person, its Account and a Project with Slurm limits, a Gold allocation and
/// XML metacharacters in its description.
fn baseline(p: &str) -> Vec<Value> {
    let base = format!("{p}a");
    vec![
        person("physics", &base),
        doc(
            "Account",
            "physics",
            &base,
            json!({"person": base, "username": base, "uidNumber": 24999}),
        ),
        doc(
            "Project",
            "physics",
            &format!("{p}proj"),
            json!({
                "description": "R&D <lab> ]]> </Set><Set name=\"Active\">False</Set> &amp; x' < 'y'); DROP TABLE g_project; --",
                "members": [base],
                "slurm": {"limits": {"grpTRES": {"cpu": 100}}},
                "gold": {"allocations": [{"amount": 1000, "start": "2030-01-01", "end": "2030-12-31"}]},
            }),
        ),
    ]
}

/// The baseline without the objects a case declares itself (a case that changes the baseline
/// Project replaces it, as an edit of the manifest would).
fn baseline_for(p: &str, case: &Case) -> Vec<u8> {
    let id = |d: &Value| (d["kind"].clone(), d["metadata"].clone());
    let theirs: Vec<_> = case
        .files
        .iter()
        .filter_map(|(_, bytes)| std::str::from_utf8(bytes).ok())
        .flat_map(|t| t.split("---\n"))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .map(|d| id(&d))
        .collect();
    let kept: Vec<Value> = baseline(p)
        .into_iter()
        .filter(|d| !theirs.contains(&id(d)))
        .collect();
    stream(&kept)
}

async fn run(args: Vec<String>) -> (i32, String) {
    roster_off_runtime(args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_refuses_every_hostile_input_and_writes_nothing() {
    let tree = TestTree::new("hostile").await;
    let dir = scratch("hostile");
    let p = format!("h{}", std::process::id() % 100000);
    let cluster = format!("th{}", std::process::id());
    let (ok, out) = sacctmgr(&["-i", "add", "cluster", &cluster]);
    assert!(ok || out.contains("Nothing new added"), "{out}");
    let gold = GoldServer::start(
        "127.0.0.1:0",
        Options {
            secret: "hostile-secret".into(),
            actors: vec!["root".into()],
            chunk_rows: 100,
            readers: vec![],
        },
    )
    .await
    .unwrap();
    std::fs::write(dir.join("gold.key"), "hostile-secret\n").unwrap();
    std::fs::write(dir.join("ro.url"), &dev_env()["SLURMDB_RO_URL"]).unwrap();
    let backends = format!(
        "slurm:\n  clusters: [{cluster}]\n  slurmConf: {}\n  databaseUrlFile: {}\ngold:\n  host: 127.0.0.1\n  port: {}\n  authKeyFile: {}\n",
        dev_env()["SLURM_CONF"],
        dir.join("ro.url").display(),
        gold.addr().port(),
        dir.join("gold.key").display(),
    );
    let config = tree.write_config_with(&dir, &backends);
    let cfg = config.display().to_string();

    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("base.yaml"), stream(&baseline(&p))).unwrap();
    let (code, out) = run(vec![
        "apply".into(),
        "-f".into(),
        site.display().to_string(),
        "--config".into(),
        cfg.clone(),
    ])
    .await;
    assert_eq!(code, 0, "the baseline converges: {out}");
    // Gold's XML metacharacters are data: the description arrives as text, nothing more.
    let project = gold
        .rows("Project")
        .into_iter()
        .find(|r| r["Name"] == format!("{p}proj"))
        .expect("the Gold project");
    assert_eq!(project["Active"], "True", "{project:?}");
    assert!(
        project["Description"].contains("</Set><Set name=\"Active\">False</Set>")
            && project["Description"].contains("]]>"),
        "{project:?}"
    );
    // Gold's SQL takes values between quotes, unescaped: no quote reaches it, and what would
    // have been evaluated (x' < 'y) or executed arrives as plain text.
    assert!(
        project["Description"].ends_with("x < y); DROP TABLE g_project; --")
            && !project["Description"].contains('\''),
        "{project:?}"
    );
    assert_eq!(gold.rows("Project").len(), 1);

    let ldap_before = fingerprint(&tree.dn).await;
    let slurm_before = slurm_txn(&cluster, &p).await;
    let mut failures = vec![];
    for (i, case) in catalogue(&p).into_iter().enumerate() {
        let case_dir = dir.join(format!("case-{i}"));
        let _ = std::fs::remove_dir_all(&case_dir);
        std::fs::create_dir_all(&case_dir).unwrap();
        std::fs::write(case_dir.join("base.yaml"), baseline_for(&p, &case)).unwrap();
        for (name, bytes) in &case.files {
            std::fs::write(case_dir.join(name), bytes).unwrap();
        }
        let case_config = match &case.config {
            Some(extra) => tree
                .write_config_with(&case_dir, &(backends.clone() + extra))
                .display()
                .to_string(),
            None => cfg.clone(),
        };
        let gold_log = gold.log().len();
        let (code, out) = run(vec![
            "apply".into(),
            "-f".into(),
            case_dir.display().to_string(),
            "--config".into(),
            case_config,
        ])
        .await;
        let mut wrong = vec![];
        if code != case.code {
            wrong.push(format!("exit {code}, not {}", case.code));
        }
        for s in &case.says {
            if !out.contains(s.as_str()) {
                wrong.push(format!("no {s:?}"));
            }
        }
        if out.contains('\u{1b}') || out.contains('\u{0}') {
            wrong.push("raw control characters in the output".into());
        }
        if fingerprint(&tree.dn).await != ldap_before {
            wrong.push("LDAP written".into());
        }
        if slurm_txn(&cluster, &p).await != slurm_before {
            wrong.push("Slurm written".into());
        }
        let writes: Vec<String> = gold
            .log()
            .into_iter()
            .skip(gold_log)
            .filter(|e| e.action != "Query")
            .map(|e| format!("{} {:?}", e.action, e.objects))
            .collect();
        if !writes.is_empty() {
            wrong.push(format!("Gold written: {writes:?}"));
        }
        if !wrong.is_empty() {
            let shown: String = out.chars().take(3000).collect();
            failures.push(format!("{}: {}\n{shown}", case.name, wrong.join("; ")));
            // A write would spoil every later case's check: stop here.
            if wrong.iter().any(|w| w.contains("written")) {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    tree.cleanup().await;
}

/// A huge manifest and a huge CSV export are refused without being read to their end.
#[tokio::test]
async fn huge_manifests_and_exports_are_refused_at_the_size_limit() {
    let tree = TestTree::new("hostile-huge").await;
    let dir = scratch("hostile-huge");
    let cfg = tree.write_config(&dir).display().to_string();
    let before = fingerprint(&tree.dn).await;
    // Sparse files: 16 times the limit, never read beyond it.
    let huge = dir.join("huge.yaml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 * 1024 * 1024 * 16)
        .unwrap();
    let (code, out, err) = roster(&["apply", "-f", &huge.display().to_string(), "--config", &cfg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("input exceeds 67108864 bytes"), "{err}");
    assert!(err.contains("nothing was planned or written"), "{err}");
    std::fs::remove_file(&huge).unwrap();
    let csv = dir.join("people.csv");
    std::fs::File::create(&csv)
        .unwrap()
        .set_len(64 * 1024 * 1024 * 16)
        .unwrap();
    std::fs::write(dir.join("import.yaml"), "apiVersion: roster.io/v1alpha1\nkind: ImportSource\nmetadata: {name: hr, namespace: physics}\nspec:\n  sourceUID: huge\n  reader:\n    type: Csv\n    csv: {path: people.csv}\n  mapping: {id: employeeNumber}\n  recordUID: <employeeNumber>\n").unwrap();
    let (code, out, err) = roster(&[
        "apply",
        "-f",
        &dir.join("import.yaml").display().to_string(),
        "--config",
        &cfg,
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("ImportSource physics/hr: SourceUnreachable")
            && out.contains("the CSV file is larger than 64 MiB; Roster refuses to import it"),
        "{out}"
    );
    assert_eq!(fingerprint(&tree.dn).await, before);
    std::fs::remove_file(&csv).unwrap();
    tree.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Through the API server

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn admission_and_the_operator_refuse_the_same_catalogue() {
    let w = World::start("hostile-op", "").await;
    let (tree, cluster) = (&w.tree, &w.cluster);
    let k = |args: &[&str], stdin: Option<&str>| cluster.kubectl(args, stdin);
    let _operator = w.operator(&w.config, "hostile", false);
    let p = format!("k{}", std::process::id() % 100000);
    let base = String::from_utf8(stream(&baseline(&p))).unwrap();
    let out = k(&["apply", "-f", "-"], Some(&base));
    assert!(out.status.success(), "{}", text(&out));
    let phase = |kind: &str, ns: &str, name: &str| {
        String::from_utf8(
            k(
                &[
                    "get",
                    kind,
                    name,
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.status.phase}",
                ],
                None,
            )
            .stdout,
        )
        .unwrap()
    };
    wait_until("the baseline Active", || {
        phase("account", "physics", &format!("{p}a")) == "Active"
            && phase("project", "physics", &format!("{p}proj")) == "Active"
    });
    let objects = || {
        String::from_utf8(
            k(
                &["get", "people,accounts,projects", "-A", "-o", "name"],
                None,
            )
            .stdout,
        )
        .unwrap()
    };
    let stored = objects();
    let ldap_before = fingerprint(&tree.dn).await;
    let mut failures = vec![];
    let mut claims = vec![];
    for case in catalogue(&p) {
        let body = match case.files.first() {
            Some((_, bytes)) => String::from_utf8(bytes.clone()).unwrap_or_default(),
            None => String::new(),
        };
        match case.api {
            Api::FileOnly => {}
            Api::Refused(says) => {
                // File mode is at least as strict: it refused the same documents.
                assert_eq!(case.code, 1, "{}", case.name);
                let out = k(&["apply", "-f", "-"], Some(&body));
                let t = text(&out);
                if out.status.success() || !t.contains(says.as_str()) || !t.contains("is invalid") {
                    failures.push(format!("{}: kubectl said {t}", case.name));
                }
                if objects() != stored {
                    failures.push(format!("{}: something was stored", case.name));
                    break;
                }
            }
            Api::Phase(kind, ns, want) => {
                let out = k(&["apply", "-f", "-"], Some(&body));
                assert!(out.status.success(), "{}: {}", case.name, text(&out));
                let last: Value = body
                    .split("---\n")
                    .filter(|d| !d.trim().is_empty())
                    .map(|d| serde_json::from_str(d).unwrap())
                    .last()
                    .unwrap();
                let name = last["metadata"]["name"].as_str().unwrap().to_string();
                claims.push((case.name.clone(), kind, ns, name, want));
            }
        }
    }
    // Every claim on what the baseline owns: Conflict, with a message naming what is taken;
    // a declared system number: Invalid, with its reason.
    for (case, kind, ns, name, want) in &claims {
        wait_until(&format!("{case}: {want}"), || {
            phase(kind, ns, name) == *want
        });
        let message = String::from_utf8(
            k(
                &[
                    "get",
                    kind,
                    name,
                    "-n",
                    ns,
                    "-o",
                    &format!("jsonpath={{.status.conditions[?(@.type==\"{want}\")].message}}"),
                ],
                None,
            )
            .stdout,
        )
        .unwrap();
        if message.is_empty() {
            failures.push(format!("{case}: no {want} condition message"));
        }
    }
    assert_eq!(
        fingerprint(&tree.dn).await,
        ldap_before,
        "the operator wrote to the directory for a refused object"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    w.tree.cleanup().await;
}
