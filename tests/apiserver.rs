//! The fake API server from Rust, through kube's own client and runtime: the semantics a
//! controller relies on.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Config};
use roster::api::{Account, AccountSpec, AccountStatus, Phase};
use roster::apiserver::ApiServer;
use serde_json::json;

async fn server() -> (ApiServer, Client) {
    let server = ApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(server.url().parse().unwrap());
    let client = Client::try_from(config).unwrap();
    let ns: Api<Namespace> = Api::all(client.clone());
    for name in ["physics", "chemistry"] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        ns.create(&PostParams::default(), &obj).await.unwrap();
    }
    (server, client)
}

fn account(name: &str, username: &str) -> Account {
    Account::new(
        name,
        AccountSpec {
            person: name.into(),
            username: username.into(),
            ..Default::default()
        },
    )
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_update_conflict_generation_and_status() {
    let (_server, client) = server().await;
    let api: Api<Account> = Api::namespaced(client.clone(), "physics");
    let created = api
        .create(&PostParams::default(), &account("ada", "ada"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    let rv1 = created.metadata.resource_version.clone().unwrap();
    // Defaults from the schema are applied, as a real server does.
    assert_eq!(
        created.spec.deletion_policy,
        roster::api::DeletionPolicy::Deactivate
    );

    // A metadata-only change does not bump generation.
    let mut labeled = created.clone();
    labeled.metadata.labels = Some([("team".to_string(), "optics".to_string())].into());
    let labeled = api
        .replace("ada", &PostParams::default(), &labeled)
        .await
        .unwrap();
    assert_eq!(labeled.metadata.generation, Some(1));
    assert_ne!(
        labeled.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );

    // A stale resourceVersion is a 409 Conflict.
    let mut stale = created.clone();
    stale.spec.locked = true;
    let e = api_error(
        api.replace("ada", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));

    // A spec change bumps generation; status sent with it is ignored.
    let mut locked = labeled.clone();
    locked.spec.locked = true;
    locked.status = Some(AccountStatus {
        phase: Some(Phase::Active),
        ..Default::default()
    });
    let locked = api
        .replace("ada", &PostParams::default(), &locked)
        .await
        .unwrap();
    assert_eq!(locked.metadata.generation, Some(2));
    assert!(locked.status.is_none(), "spec writes must not set status");

    // Status writes go through the subresource and leave spec and generation alone.
    let patch =
        json!({"status": {"phase": "Deactivated", "uidNumber": 20001}, "spec": {"locked": false}});
    let st = api
        .patch_status("ada", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().unwrap().phase, Some(Phase::Deactivated));
    assert!(st.spec.locked, "status writes must not change spec");
    assert_eq!(st.metadata.generation, Some(2));

    // A no-op write changes nothing, not even the resourceVersion.
    let again = api
        .patch_status("ada", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        st.metadata.resource_version
    );
}

#[tokio::test]
async fn validation_errors_have_the_api_server_shape() {
    let (_server, client) = server().await;
    let api: Api<Account> = Api::namespaced(client.clone(), "physics");
    let e = api_error(
        api.create(&PostParams::default(), &account("root", "root"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .starts_with("Account.roster.io \"root\" is invalid: spec.username: Invalid value"),
        "{}",
        e.message
    );
    let details = e.details.unwrap();
    assert_eq!(details.causes[0].field, "spec.username");
    assert_eq!(
        details.causes[0].message,
        "Invalid value: \"string\": username is reserved for a system account"
    );
    // Immutability (a CEL transition rule) on update.
    api.create(&PostParams::default(), &account("ada", "ada"))
        .await
        .unwrap();
    let e = api_error(
        api.patch(
            "ada",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"username": "lovelace"}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(e.message.contains("username is immutable"), "{}", e.message);
    // A namespace that does not exist.
    let nowhere: Api<Account> = Api::namespaced(client.clone(), "nowhere");
    let e = api_error(
        nowhere
            .create(&PostParams::default(), &account("ada", "ada"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
}

#[tokio::test]
async fn paging_and_label_selectors() {
    let (_server, client) = server().await;
    let api: Api<Account> = Api::namespaced(client.clone(), "physics");
    for (i, team) in ["a", "b", "a", "c", "b"].iter().enumerate() {
        let mut a = account(&format!("u{i}"), &format!("u{i}"));
        a.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        api.create(&PostParams::default(), &a).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let third = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    let names: Vec<String> = first
        .items
        .iter()
        .chain(&second.items)
        .chain(&third.items)
        .map(|a| a.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["u0", "u1", "u2", "u3", "u4"]);
    assert!(third.metadata.continue_.is_none());
    let names = |l: kube::core::ObjectList<Account>| {
        l.items
            .into_iter()
            .map(|a| a.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("team=a"))
                .await
                .unwrap()
        ),
        ["u0", "u2"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("team in (b,c)"))
                .await
                .unwrap()
        ),
        ["u1", "u3", "u4"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("team notin (a),team!=c"))
                .await
                .unwrap()
        ),
        ["u1", "u4"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=u3"))
                .await
                .unwrap()
        ),
        ["u3"]
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_and_owners_collect_dependants() {
    let (_server, client) = server().await;
    let api: Api<Account> = Api::namespaced(client.clone(), "physics");
    let ada = api
        .create(&PostParams::default(), &account("ada", "ada"))
        .await
        .unwrap();
    // kube's finalizer helper: a `test` of the missing list against null, then add.
    let add = json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                     {"op": "add", "path": "/metadata/finalizers", "value": ["roster.io/cleanup"]}]);
    let patch: json_patch::Patch = serde_json::from_value(add.clone()).unwrap();
    api.patch(
        "ada",
        &PatchParams::default(),
        &Patch::<()>::Json(patch.clone()),
    )
    .await
    .unwrap();
    // Once there is a finalizer, the same test fails (someone else got there first).
    assert!(
        api.patch("ada", &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .is_err()
    );

    // A ConfigMap owned by the Account.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "physics");
    let owned: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "ada-report", "ownerReferences": [{
            "apiVersion": "roster.io/v1alpha1", "kind": "Account", "name": "ada",
            "uid": ada.metadata.uid.clone().unwrap()}]},
        "data": {"k": "v"}}))
    .unwrap();
    cms.create(&PostParams::default(), &owned).await.unwrap();

    api.delete("ada", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("ada").await.unwrap();
    assert!(
        deleting.metadata.deletion_timestamp.is_some(),
        "held by the finalizer"
    );
    assert!(
        cms.get("ada-report").await.is_ok(),
        "the owner still exists"
    );
    // No new finalizers on a deleting object.
    let more = json!({"metadata": {"finalizers": ["roster.io/cleanup", "other"]}});
    assert!(
        api.patch("ada", &PatchParams::default(), &Patch::Merge(more))
            .await
            .is_err()
    );
    let remove: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "roster.io/cleanup"},
        {"op": "remove", "path": "/metadata/finalizers/0"}]))
    .unwrap();
    api.patch("ada", &PatchParams::default(), &Patch::<()>::Json(remove))
        .await
        .unwrap();
    assert_eq!(api_error(api.get("ada").await.unwrap_err()).code, 404);
    assert_eq!(
        api_error(cms.get("ada-report").await.unwrap_err()).code,
        404,
        "garbage-collected"
    );
}

#[tokio::test]
async fn server_side_apply_needs_a_field_manager_and_creates() {
    let (_server, client) = server().await;
    let api: Api<Account> = Api::namespaced(client.clone(), "physics");
    let doc = json!({"apiVersion": "roster.io/v1alpha1", "kind": "Account",
                     "metadata": {"name": "ada"}, "spec": {"person": "ada", "username": "ada"}});
    let e = api_error(
        api.patch("ada", &PatchParams::default(), &Patch::Apply(&doc))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    let created = api
        .patch(
            "ada",
            &PatchParams::apply("roster").force(),
            &Patch::Apply(&doc),
        )
        .await
        .unwrap();
    assert_eq!(created.spec.username, "ada");
    let status = json!({"apiVersion": "roster.io/v1alpha1", "kind": "Account", "metadata": {"name": "ada"},
                        "status": {"phase": "Active", "uidNumber": 20001}});
    let st = api
        .patch_status(
            "ada",
            &PatchParams::apply("roster").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().uid_number, Some(20001));
}

type Events = futures::stream::BoxStream<'static, Result<watcher::Event<Account>, watcher::Error>>;

async fn next(s: &mut Events) -> watcher::Event<Account> {
    tokio::time::timeout(Duration::from_secs(10), s.try_next())
        .await
        .expect("an event in time")
        .expect("no watcher error")
        .expect("the stream goes on")
}

#[tokio::test]
async fn a_watcher_sees_changes_in_order_and_relists_after_410() {
    let (server, client) = server().await;
    let api: Api<Account> = Api::namespaced(client.clone(), "physics");
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut stream).await, watcher::Event::Init));
    assert!(matches!(next(&mut stream).await, watcher::Event::InitDone));

    api.create(&PostParams::default(), &account("ada", "ada"))
        .await
        .unwrap();
    api.patch(
        "ada",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"locked": true}})),
    )
    .await
    .unwrap();
    api.delete("ada", &DeleteParams::default()).await.unwrap();
    match next(&mut stream).await {
        watcher::Event::Apply(a) => assert!(!a.spec.locked),
        other => panic!("expected the create, got {other:?}"),
    }
    match next(&mut stream).await {
        watcher::Event::Apply(a) => assert!(a.spec.locked),
        other => panic!("expected the update, got {other:?}"),
    }
    assert!(matches!(next(&mut stream).await, watcher::Event::Delete(_)));

    // The watcher falls behind: a change it has not seen, then the history before it is
    // forgotten and the watch cut. Its resourceVersion has expired (410): it must relist.
    server.shared.pause_watches(true);
    api.create(&PostParams::default(), &account("bob", "bob"))
        .await
        .unwrap();
    server.shared.compact();
    server.shared.close_watches();
    server.shared.pause_watches(false);
    let mut seen = vec![];
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on");
        match item {
            // The watcher reports the expiry, then recovers by relisting when polled again.
            Err(watcher::Error::WatchError(s)) if s.code == 410 => seen.push("410".to_string()),
            Err(e) => panic!("unexpected watcher error {e:?}"),
            Ok(watcher::Event::Init) => seen.push("Init".to_string()),
            Ok(watcher::Event::InitApply(a)) => {
                seen.push(format!("InitApply {}", a.metadata.name.unwrap()))
            }
            Ok(watcher::Event::InitDone) => {
                seen.push("InitDone".into());
                break;
            }
            Ok(watcher::Event::Apply(a)) => {
                seen.push(format!("Apply {}", a.metadata.name.unwrap()))
            }
            Ok(watcher::Event::Delete(a)) => {
                seen.push(format!("Delete {}", a.metadata.name.unwrap()))
            }
        }
    }
    assert_eq!(
        seen,
        ["410", "Init", "InitApply bob", "InitDone"],
        "relisted after 410"
    );
}
