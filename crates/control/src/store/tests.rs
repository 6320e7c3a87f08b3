use super::*;

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  \
                       selector: {app: web}\n  ports: [{name: http, port: 80}]\n";
const CUSTOM: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                      metadata: {name: ext-authz, namespace: web}\nspec:\n  \
                      action: CUSTOM\n  provider: {name: opa}\n  rules: [{}]\n";

fn store(dir: &Path, data: &Path) -> Arc<ConfigStore> {
    let history = crate::revisions::FileRevisionStore::open(data).unwrap();
    ConfigStore::open(dir, Box::new(history)).unwrap()
}

#[tokio::test]
async fn a_policy_the_mesh_cannot_enforce_rejects_the_whole_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, data) = (tmp.path().join("config"), tmp.path().join("data"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(dir.join("web.yaml"), SERVICE).unwrap();
    let store = store(&dir, &data);
    let good = store.current().number;

    // A change that adds a Service (valid) and a CUSTOM policy (valid Istio, but nothing
    // in the mesh could enforce it).
    let files = BTreeMap::from([
        ("web.yaml".to_owned(), SERVICE.to_owned()),
        (
            "more.yaml".to_owned(),
            SERVICE.replace("name: web", "name: api"),
        ),
        ("policy.yaml".to_owned(), CUSTOM.to_owned()),
    ]);
    let Err(ChangeError::Invalid(errors)) = store.change(files, Source::Apply, None, false).await
    else {
        panic!("the change was accepted");
    };
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "policy.yaml:1:1: AuthorizationPolicy web/ext-authz: spec.action: action CUSTOM \
          (external authorization) is not supported by the mesh"
        ]
    );
    // Nothing of it applies: the last good revision keeps serving, and the rejection is
    // in the history.
    let current = store.current();
    assert_eq!(current.number, good);
    assert_eq!(current.config.services().count(), 1);
    let last = store.history().pop().unwrap();
    assert_eq!(last.status, Status::Rejected);
    assert_eq!(last.errors, errors);

    // The directory too: a control plane cannot start on it.
    std::fs::write(dir.join("policy.yaml"), CUSTOM).unwrap();
    let history = crate::revisions::FileRevisionStore::open(&data).unwrap();
    let Err(StoreError::Invalid { errors, .. }) = ConfigStore::open(&dir, Box::new(history)) else {
        panic!("a directory with a CUSTOM policy opened");
    };
    assert!(
        errors[0].ends_with("action CUSTOM (external authorization) is not supported by the mesh"),
        "{errors:?}"
    );
}

#[test]
fn route_warnings_come_with_the_loaders() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {name: r}\nspec:\n  \
                 parentRefs: [{group: \"\", kind: Service, name: gone}]\n";
    let files = BTreeMap::from([
        ("web.yaml".to_owned(), SERVICE.to_owned()),
        ("route.yaml".to_owned(), route.to_owned()),
    ]);
    let config = parse_files(&files, Path::new("cfg")).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.contains(
            &"cfg/route.yaml:1:1: warning: HTTPRoute default/r: spec.parentRefs[0]: \
              parentRef Service default/gone does not exist (or lacks that port): the \
              route does not attach to it"
                .to_owned()
        ),
        "{warnings:#?}"
    );
}

// === the watched directory ===

/// Writes a file the way editors and `git checkout` do, whole: into a hidden file, then
/// renamed into place, so that the watcher never reads half of it.
fn put(path: impl AsRef<Path>, content: impl AsRef<[u8]>) -> std::io::Result<()> {
    let path = path.as_ref();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// A config directory with one good Service and a store watching it.
struct Watched {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: Arc<ConfigStore>,
}

impl Watched {
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, data) = (tmp.path().join("config"), tmp.path().join("data"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        put(dir.join("web.yaml"), SERVICE).unwrap();
        let store = store(&dir, &data);
        tokio::spawn(store.clone().watch_dir(Duration::from_millis(20)));
        Watched {
            _tmp: tmp,
            dir,
            store,
        }
    }

    /// Waits (at most 30 s, generous for a loaded machine) for the history to hold `n`
    /// entries, and returns the last.
    async fn entry(&self, n: usize) -> RevisionMeta {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let history = self.store.history();
            if history.len() >= n {
                return history[n - 1].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the watcher recorded nothing: {history:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A valid change after a rejected one still applies: the watcher is alive.
    async fn still_applies(&self, n: usize) {
        put(
            self.dir.join("api.yaml"),
            SERVICE.replace("name: web", "name: api"),
        )
        .unwrap();
        let applied = self.entry(n).await;
        assert_eq!(applied.status, Status::Applied, "{applied:#?}");
        assert_eq!(self.store.current().config.services().count(), 2);
    }
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A FIFO named like config is rejected by name instead of blocking the watcher forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_directory_is_rejected_not_waited_on() {
    let w = Watched::start();
    mkfifo(&w.dir.join("pipe.yaml"));
    let rejected = w.entry(2).await;
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(
        rejected.errors,
        [format!(
            "{}/pipe.yaml:1:1: a FIFO, not a regular file; only regular files are read",
            w.dir.display()
        )]
    );
    assert_eq!(w.store.current().number, 1);
    std::fs::remove_file(w.dir.join("pipe.yaml")).unwrap();
    w.still_applies(3).await;
}

/// A link to /dev/zero is never read: rejected while running, and a clear error at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_dev_zero_is_rejected_and_never_read() {
    let w = Watched::start();
    std::os::unix::fs::symlink("/dev/zero", w.dir.join("zero.yaml")).unwrap();
    let rejected = w.entry(2).await;
    assert_eq!(rejected.status, Status::Rejected);
    assert!(
        rejected.errors[0].ends_with(
            "zero.yaml:1:1: a character device, not a regular file; only regular files are read"
        ),
        "{:?}",
        rejected.errors
    );
    // Nothing of it is in the history, so a restart is not refused for that; the directory
    // itself is refused with the same message.
    let data = w.dir.parent().unwrap().join("data");
    let history = crate::revisions::FileRevisionStore::open(&data).unwrap();
    let Err(StoreError::Invalid { errors, .. }) = ConfigStore::open(&w.dir, Box::new(history))
    else {
        panic!("a directory with a link to /dev/zero opened");
    };
    assert!(
        errors[0].contains("zero.yaml:1:1: a character device"),
        "{errors:?}"
    );
    std::fs::remove_file(w.dir.join("zero.yaml")).unwrap();
    w.still_applies(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_rejected_not_applied_lossily() {
    let w = Watched::start();
    let mut bad = SERVICE.replace("name: web", "name: api").into_bytes();
    bad.extend_from_slice(b"# caf\xff\n");
    put(w.dir.join("bad.yaml"), bad).unwrap();
    let rejected = w.entry(2).await;
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(rejected.errors.len(), 1, "{:?}", rejected.errors);
    assert!(
        rejected.errors[0].ends_with("bad.yaml:7:6: file is not valid UTF-8"),
        "{:?}",
        rejected.errors
    );
    assert_eq!(w.store.current().config.services().count(), 1);
    std::fs::remove_file(w.dir.join("bad.yaml")).unwrap();
    w.still_applies(3).await;
}

/// A file over the size limit is rejected, and not kept in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_file_is_rejected() {
    let w = Watched::start();
    let big = format!(
        "{SERVICE}{}",
        "#\n".repeat(Limits::DEFAULT.max_file_bytes as usize)
    );
    put(w.dir.join("big.yaml"), big).unwrap();
    let rejected = w.entry(2).await;
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(
        rejected.errors,
        [format!(
            "{}/big.yaml:1:1: file is larger than {} bytes",
            w.dir.display(),
            Limits::DEFAULT.max_file_bytes
        )]
    );
    std::fs::remove_file(w.dir.join("big.yaml")).unwrap();
    w.still_applies(3).await;
}

/// Nesting that once overflowed the stack is an error at the file and line where it
/// passes the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_yaml_is_rejected_with_its_position() {
    let w = Watched::start();
    put(
        w.dir.join("deep.yaml"),
        format!("{}x\n", "- ".repeat(50_000)),
    )
    .unwrap();
    let rejected = w.entry(2).await;
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(
        rejected.errors,
        [format!(
            "{}/deep.yaml:1:513: collections nest more than 256 levels deep",
            w.dir.display()
        )]
    );
    std::fs::remove_file(w.dir.join("deep.yaml")).unwrap();
    w.still_applies(3).await;
}

/// Directory links that loop are walked once, and a tree deeper than the limit is refused
/// at the limit: neither keeps a worker busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_loops_and_deep_trees_end() {
    let w = Watched::start();
    std::fs::create_dir_all(w.dir.join("a")).unwrap();
    std::fs::create_dir_all(w.dir.join("b")).unwrap();
    std::os::unix::fs::symlink("../b", w.dir.join("a/b")).unwrap();
    std::os::unix::fs::symlink("../a", w.dir.join("b/a")).unwrap();
    put(
        w.dir.join("a/api.yaml"),
        SERVICE.replace("name: web", "name: api"),
    )
    .unwrap();
    let applied = w.entry(2).await;
    assert_eq!(applied.status, Status::Applied, "{applied:#?}");
    assert_eq!(w.store.current().config.services().count(), 2);

    let mut deep = w.dir.join("deep");
    for _ in 0..100 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    put(deep.join("x.yaml"), SERVICE).unwrap();
    let rejected = w.entry(3).await;
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(rejected.errors.len(), 1, "{:?}", rejected.errors);
    assert!(
        rejected.errors[0].ends_with("directories nest more than 32 levels deep; not read"),
        "{:?}",
        rejected.errors
    );
}
