//! Tests for the join-token store: creation, authorization, revocation, expiry, locking.

use super::*;

fn sa(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("trellis.local", ns, sa)
}

#[test]
fn create_and_authorize() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let (token_id, token) = store.create("shop", &sa(&["web", "api"]), None).unwrap();
    assert_eq!(token_id.len(), 8);
    assert!(token.starts_with(&format!("trellis-jt.{token_id}.")));
    assert_eq!(token.len(), "trellis-jt.".len() + 8 + 1 + 64);
    store.authorize(&token, &id("shop", "web")).unwrap();
    store.authorize(&token, &id("shop", "api")).unwrap();

    // Only the hash is stored, never the secret itself.
    let secret = token.rsplit('.').next().unwrap();
    let on_disk = fs::read_to_string(dir.path().join("tokens.json")).unwrap();
    assert!(!on_disk.contains(secret));
    assert!(on_disk.contains(&token_id));
    #[cfg(unix)]
    assert_eq!(
        fsutil::mode_of(&dir.path().join("tokens.json")).unwrap(),
        Some(0o600)
    );
    assert!(!dir.path().join(LOCK_FILE_NAME).exists());
}

#[test]
fn wildcard_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let (_, token) = store.create("shop", &sa(&["*"]), None).unwrap();
    store.authorize(&token, &id("shop", "anything")).unwrap();
    assert!(matches!(
        store.authorize(&token, &id("other", "anything")),
        Err(TokenError::WrongNamespace { .. })
    ));
}

#[test]
fn bad_secret_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let (token_id, _) = store.create("shop", &sa(&["web"]), None).unwrap();
    let forged = format!("trellis-jt.{token_id}.{}", "ab".repeat(32));
    let err = store.authorize(&forged, &id("shop", "web")).unwrap_err();
    assert!(matches!(err, TokenError::Unknown { token_id: ref t } if *t == token_id));

    let other_id = if token_id == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let other = format!("trellis-jt.{other_id}.{}", "ab".repeat(32));
    assert!(matches!(
        store.authorize(&other, &id("shop", "web")),
        Err(TokenError::Unknown { .. })
    ));
}

#[test]
fn wrong_namespace_and_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let (_, token) = store.create("shop", &sa(&["web"]), None).unwrap();
    let err = store.authorize(&token, &id("billing", "web")).unwrap_err();
    match &err {
        TokenError::WrongNamespace { requested, allowed } => {
            assert_eq!(requested, "billing");
            assert_eq!(allowed, "shop");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("billing"), "{err}");

    let err = store.authorize(&token, &id("shop", "admin")).unwrap_err();
    match &err {
        TokenError::ServiceAccountNotAllowed { requested, allowed } => {
            assert_eq!(requested, "admin");
            assert_eq!(allowed, &sa(&["web"]));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("admin"), "{err}");
}

#[test]
fn revoked() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let (token_id, token) = store.create("shop", &sa(&["web"]), None).unwrap();
    let (_, other) = store.create("shop", &sa(&["web"]), None).unwrap();
    store.revoke(&token_id).unwrap();
    assert!(matches!(
        store.authorize(&token, &id("shop", "web")),
        Err(TokenError::Revoked { .. })
    ));
    store.authorize(&other, &id("shop", "web")).unwrap();
    store.revoke(&token_id).unwrap();
    assert!(matches!(
        store.revoke("deadbeef"),
        Err(TokenError::Unknown { .. })
    ));
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|t| t.id == token_id && t.revoked));
    assert!(listed.iter().any(|t| t.id != token_id && !t.revoked));
}

#[test]
fn expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let (_, token) = store
        .create("shop", &sa(&["web"]), Some(Duration::from_millis(30)))
        .unwrap();
    store.authorize(&token, &id("shop", "web")).unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let err = store.authorize(&token, &id("shop", "web")).unwrap_err();
    assert!(matches!(err, TokenError::Expired { .. }), "{err:?}");
    assert!(matches!(
        store.create("shop", &sa(&["web"]), Some(Duration::ZERO)),
        Err(TokenError::InvalidTtl { .. })
    ));
}

#[test]
fn malformed() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let (token_id, token) = store.create("shop", &sa(&["web"]), None).unwrap();
    let secret = token.rsplit('.').next().unwrap().to_owned();
    let cases = [
        String::new(),
        "garbage".to_owned(),
        format!("trellis-xx.{token_id}.{secret}"),
        format!("trellis-jt.{token_id}"),
        format!("trellis-jt.{token_id}.{secret}.extra"),
        format!("trellis-jt.ABCDEF12.{secret}"),
        format!("trellis-jt.{token_id}0.{secret}"),
        format!("trellis-jt.{token_id}.{}", &secret[1..]),
        format!("trellis-jt.{token_id}.{}g", &secret[1..]),
    ];
    for case in cases {
        let err = store.authorize(&case, &id("shop", "web")).unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed { .. }),
            "{case:?} gave {err:?}"
        );
    }
}

#[test]
fn create_validates_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    assert!(matches!(
        store.create("a/b", &sa(&["web"]), None),
        Err(TokenError::InvalidNamespace { .. })
    ));
    assert!(matches!(
        store.create("shop", &[], None),
        Err(TokenError::NoServiceAccounts)
    ));
    assert!(matches!(
        store.create("shop", &sa(&["we b"]), None),
        Err(TokenError::InvalidServiceAccount { .. })
    ));
}

#[test]
fn no_token_covers_the_mesh_s_own_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    // `*` there would cover the control plane's identity; a named account, node agents'
    // or any other component's to come.
    for (ns, accounts) in [
        ("trellis-system", sa(&["*"])),
        ("trellis-system", sa(&["trellis-control"])),
        ("trellis-system", sa(&["trellis-node"])),
        ("trellis-system", sa(&["web"])),
        ("Trellis-System", sa(&["*"])),
    ] {
        let got = store.create(ns, &accounts, None);
        assert!(
            matches!(got, Err(TokenError::ReservedNamespace { ref namespace }) if namespace == ns),
            "{ns} {accounts:?}: {got:?}"
        );
    }
    assert!(store.list().unwrap().is_empty(), "nothing was stored");

    // A token file that says otherwise (edited by hand, or written by an older version)
    // still grants nothing there.
    let (_, token) = store.create("shop", &sa(&["*"]), None).unwrap();
    let path = dir.path().join(FILE_NAME);
    let edited = fs::read_to_string(&path)
        .unwrap()
        .replace("\"shop\"", "\"trellis-system\"");
    fs::write(&path, edited).unwrap();
    assert_eq!(store.list().unwrap()[0].namespace, "trellis-system");
    let control = SpiffeId::new("trellis.local", "trellis-system", "trellis-control");
    let got = store.authorize(&token, &control);
    assert!(
        matches!(got, Err(TokenError::ReservedIdentity { ref requested }) if *requested == control.to_string()),
        "{got:?}"
    );
}

#[test]
fn other_store_instances_see_changes() {
    let dir = tempfile::tempdir().unwrap();
    let writer = TokenStore::open(dir.path()).unwrap();
    let reader = TokenStore::open(dir.path()).unwrap();
    let (token_id, token) = writer.create("shop", &sa(&["web"]), None).unwrap();
    reader.authorize(&token, &id("shop", "web")).unwrap();
    writer.revoke(&token_id).unwrap();
    assert!(matches!(
        reader.authorize(&token, &id("shop", "web")),
        Err(TokenError::Revoked { .. })
    ));
}

#[test]
fn concurrent_writers_and_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                // A separate store per thread, as separate processes would have.
                let store = TokenStore::open(&path).unwrap();
                (0..10)
                    .map(|_| store.create("shop", &sa(&["web"]), None).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || {
            let store = TokenStore::open(&path).unwrap();
            for _ in 0..200 {
                // A torn file would surface as TokenError::Corrupt here.
                store.list().unwrap();
            }
        })
    };
    let created: Vec<(String, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    reader.join().unwrap();
    let store = TokenStore::open(&path).unwrap();
    assert_eq!(store.list().unwrap().len(), 40, "a write was lost");
    for (_, token) in &created {
        store.authorize(token, &id("shop", "web")).unwrap();
    }
}

#[test]
fn corrupt_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens.json"), b"{not json").unwrap();
    assert!(matches!(
        TokenStore::open(dir.path()),
        Err(TokenError::Corrupt { .. })
    ));
}

#[test]
fn stale_lock_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let lock = dir.path().join(LOCK_FILE_NAME);
    let f = fs::File::create(&lock).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(120))
        .unwrap();
    drop(f);
    store.create("shop", &sa(&["web"]), None).unwrap();
    assert!(!lock.exists());
}

#[test]
fn constant_time_eq_works() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}
