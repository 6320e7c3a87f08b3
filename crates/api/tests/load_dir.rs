//! `load_dir`: a whole config directory, all or nothing.

use std::fs;
use std::path::{Path, PathBuf};

use trellis_api::load::{load_dir, LoadError, Severity};
use trellis_api::resources::Resource;

fn data(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read test data {}: {e}", path.display()))
}

/// Writes `files` (relative path, content) under a fresh temporary directory.
fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (relative, content) in files {
        let path = dir.path().join(relative);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(&path, content).expect("write");
    }
    dir
}

fn invalid(
    result: Result<trellis_api::load::ConfigSet, LoadError>,
) -> Vec<trellis_api::load::Diagnostic> {
    match result {
        Err(LoadError::Invalid(diagnostics)) => diagnostics,
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(set) => panic!("expected Invalid, got {} resources", set.resources.len()),
    }
}

const VS_REVIEWS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                          metadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  \
                          - route:\n    - destination: {host: reviews}\n";

#[test]
fn loads_a_valid_directory_recursively_in_sorted_order() {
    let bookinfo = data("bookinfo/reviews.yaml");
    let retries = data("warnings/cors.yaml");
    let dir = config_dir(&[
        ("b/reviews.yml", &bookinfo),
        ("a-ratings.yaml", &retries),
        ("README.md", "not: [yaml"),
        (".hidden.yaml", "not: [yaml"),
        (".git/config.yaml", "not: [yaml"),
        ("notes.txt", "kind: Nonsense"),
    ]);
    let set = load_dir(dir.path()).expect("valid config");
    let files: Vec<PathBuf> = set
        .resources
        .iter()
        .map(|r| r.file.strip_prefix(dir.path()).unwrap().to_path_buf())
        .collect();
    assert_eq!(files[0], Path::new("a-ratings.yaml"));
    assert!(files[1..].iter().all(|f| f == Path::new("b/reviews.yml")));
    assert_eq!(set.resources.len(), 7);
    assert_eq!(set.services().count(), 1);
    assert_eq!(set.workload_entries().count(), 3);
    assert_eq!(set.destination_rules().count(), 1);
    let vs_names: Vec<(&str, Option<&str>)> = set
        .virtual_services()
        .map(|v| (v.meta.name.as_str(), v.meta.namespace.as_deref()))
        .collect();
    assert_eq!(
        vs_names,
        [("ratings", Some("bookinfo")), ("reviews", Some("default"))]
    );
    assert_eq!(set.warnings.len(), 1);
    assert_eq!(set.warnings[0].severity, Severity::Warning);
    assert_eq!(
        set.warnings[0].field.as_deref(),
        Some("spec.http[0].corsPolicy")
    );
    assert_eq!(set.warnings[0].file, dir.path().join("a-ratings.yaml"));
    assert_eq!(set.hash.len(), 64);
    assert!(set.hash.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn one_bad_file_rejects_the_whole_directory() {
    let dir = config_dir(&[
        ("good.yaml", &data("bookinfo/reviews.yaml")),
        ("bad.yaml", &data("invalid/weight-type.yaml")),
        ("warn.yaml", &data("warnings/cors.yaml")),
    ]);
    let diagnostics = invalid(load_dir(dir.path()));
    let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{diagnostics:#?}");
    assert_eq!(errors[0].file, dir.path().join("bad.yaml"));
    assert_eq!((errors[0].line, errors[0].column), (17, 15));
    assert_eq!(
        errors[0].field.as_deref(),
        Some("spec.http[0].route[1].weight")
    );
    // Warnings from the other files come along, so the user sees everything at once.
    assert!(diagnostics
        .iter()
        .any(|d| d.severity == Severity::Warning && d.file == dir.path().join("warn.yaml")));
    // The error's Display names the file.
    let err = load_dir(dir.path()).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with("invalid configuration (1 error):"),
        "{shown}"
    );
    assert!(shown.contains("bad.yaml:17:15"), "{shown}");
}

#[test]
fn duplicates_across_files_name_both_places() {
    let dir = config_dir(&[
        ("a.yaml", VS_REVIEWS),
        ("sub/b.yaml", &format!("# comment\n{VS_REVIEWS}")),
    ]);
    let diagnostics = invalid(load_dir(dir.path()));
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert_eq!(d.severity, Severity::Error);
    assert_eq!(d.file, dir.path().join("sub/b.yaml"));
    assert_eq!(d.line, 2);
    assert_eq!(d.kind.as_deref(), Some("VirtualService"));
    assert_eq!(d.name.as_deref(), Some("reviews"));
    assert_eq!(
        d.message,
        format!(
            "duplicate VirtualService default/reviews: already defined at {}:1",
            dir.path().join("a.yaml").display()
        )
    );
}

#[test]
fn same_name_in_other_namespace_or_kind_is_not_a_duplicate() {
    let other_ns = VS_REVIEWS.replace("name: reviews", "name: reviews\n  namespace: prod");
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  \
              name: reviews\nspec:\n  host: reviews\n";
    let dir = config_dir(&[
        ("a.yaml", VS_REVIEWS),
        ("b.yaml", &other_ns),
        ("c.yaml", dr),
    ]);
    let set = load_dir(dir.path()).expect("no duplicates");
    assert_eq!(set.resources.len(), 3);
    let kinds: Vec<&str> = set.resources.iter().map(|r| r.value.kind()).collect();
    assert_eq!(
        kinds,
        ["VirtualService", "VirtualService", "DestinationRule"]
    );
    assert!(
        matches!(set.resources[1].value, Resource::VirtualService(ref v) if v.meta.namespace.as_deref() == Some("prod"))
    );
}

#[test]
fn hash_tracks_content_and_names() {
    let dir = config_dir(&[("a.yaml", VS_REVIEWS)]);
    let first = load_dir(dir.path()).expect("valid").hash;
    assert_eq!(load_dir(dir.path()).expect("valid").hash, first, "stable");

    fs::write(dir.path().join("a.yaml"), format!("{VS_REVIEWS}# edited\n")).unwrap();
    let edited = load_dir(dir.path()).expect("valid").hash;
    assert_ne!(edited, first, "content change");

    fs::rename(dir.path().join("a.yaml"), dir.path().join("b.yaml")).unwrap();
    let renamed = load_dir(dir.path()).expect("valid").hash;
    assert_ne!(renamed, edited, "rename");

    // The same files elsewhere hash the same: only relative paths count.
    let elsewhere = config_dir(&[("b.yaml", &format!("{VS_REVIEWS}# edited\n"))]);
    assert_eq!(load_dir(elsewhere.path()).expect("valid").hash, renamed);
}

#[test]
fn missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    match load_dir(&missing) {
        Err(LoadError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn non_utf8_file_is_a_diagnostic() {
    let dir = config_dir(&[("a.yaml", VS_REVIEWS)]);
    fs::write(dir.path().join("b.yaml"), b"kind: \xff\n").unwrap();
    let diagnostics = invalid(load_dir(dir.path()));
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].file, dir.path().join("b.yaml"));
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (1, 7));
    assert_eq!(diagnostics[0].message, "file is not valid UTF-8");
}

#[cfg(unix)]
#[test]
fn follows_configmap_style_symlinks_and_survives_loops() {
    let dir = config_dir(&[("..data/reviews.yaml", VS_REVIEWS)]);
    std::os::unix::fs::symlink("..data/reviews.yaml", dir.path().join("reviews.yaml")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("loop")).unwrap();
    let set = load_dir(dir.path()).expect("valid");
    // Loaded once through the visible symlink; `..data` itself is hidden and the loop back to
    // the root is not walked twice.
    assert_eq!(set.resources.len(), 1);
    assert_eq!(set.resources[0].file, dir.path().join("reviews.yaml"));
}
