use std::os::unix::fs::symlink;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  \
                       ports: [{name: http, port: 80}]\n";

fn errors(result: Result<ConfigFiles, LoadError>) -> Vec<String> {
    match result {
        Err(LoadError::Invalid(diags)) => diags.iter().map(ToString::to_string).collect(),
        other => panic!("expected diagnostics, got {other:?}"),
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn yaml_extensions() {
    assert!(is_yaml(Path::new("a.yaml")));
    assert!(is_yaml(Path::new("a.YML")));
    assert!(!is_yaml(Path::new("a.json")));
    assert!(!is_yaml(Path::new("yaml")));
}

#[test]
fn hash_separates_path_and_content() {
    let mut a = ContentHash::new();
    a.add("ab", b"c");
    let mut b = ContentHash::new();
    b.add("a", b"bc");
    assert_ne!(a.finish(), b.finish());
}

#[test]
fn reads_nested_files_by_relative_path_skipping_hidden_ones() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("ns/web")).unwrap();
    fs::create_dir_all(tmp.path().join(".git")).unwrap();
    fs::write(tmp.path().join("a.yaml"), SERVICE).unwrap();
    fs::write(tmp.path().join("ns/web/b.yml"), SERVICE).unwrap();
    fs::write(tmp.path().join("ns/notes.txt"), "not config").unwrap();
    fs::write(tmp.path().join(".git/c.yaml"), "not: read").unwrap();
    let files = read_config_dir(tmp.path(), &Limits::DEFAULT).unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), ["a.yaml", "ns/web/b.yml"]);
}

/// A FIFO would block the reader forever waiting for a writer; it is reported instead, and
/// so is a symlink to a device that never ends.
#[test]
fn fifos_and_devices_are_errors_and_never_block() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("good.yaml"), SERVICE).unwrap();
    mkfifo(&tmp.path().join("pipe.yaml"));
    symlink("/dev/zero", tmp.path().join("zero.yaml")).unwrap();
    // Not named like config: never looked at.
    mkfifo(&tmp.path().join("pipe.txt"));
    let (tx, rx) = std::sync::mpsc::channel();
    let root = tmp.path().to_path_buf();
    std::thread::spawn(move || tx.send(read_config_dir(&root, &Limits::DEFAULT)));
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("reading the directory blocked");
    let dir = tmp.path().display();
    assert_eq!(
        errors(result),
        [
            format!("{dir}/pipe.yaml:1:1: a FIFO, not a regular file; only regular files are read"),
            format!(
                "{dir}/zero.yaml:1:1: a character device, not a regular file; only regular \
                 files are read"
            ),
        ]
    );
}

/// A file swapped for a FIFO between the walk and the read is caught when opened, without
/// waiting for a writer.
#[test]
fn a_fifo_opened_as_a_file_does_not_block() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pipe.yaml");
    mkfifo(&path);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(read_bounded(&path, 10).map(|b| matches!(b, Bounded::Irregular("a FIFO"))))
    });
    let irregular = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("opening the FIFO blocked")
        .unwrap();
    assert!(irregular);
    let text = read_config_file(&tmp.path().join("pipe.yaml"), &Limits::DEFAULT);
    assert!(matches!(text, Err(LoadError::Invalid(_))), "{text:?}");
}

/// Two directories linking to each other, and a diamond of links: each directory is read
/// once, and the walk ends.
#[test]
fn symlinked_directories_are_walked_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("a")).unwrap();
    fs::create_dir_all(root.join("b")).unwrap();
    fs::write(root.join("a/x.yaml"), SERVICE).unwrap();
    symlink("../b", root.join("a/to-b")).unwrap();
    symlink("../a", root.join("b/to-a")).unwrap();
    symlink(".", root.join("self")).unwrap();
    // A diamond: d0 links twice to d1, d1 twice to d2, …: 2^19 paths to 20 directories,
    // which are reachable only through the links (their real home is hidden).
    for i in 0..20 {
        fs::create_dir_all(root.join(format!(".store/d{i}"))).unwrap();
    }
    for i in 0..19 {
        let next = format!("../d{}", i + 1);
        symlink(&next, root.join(format!(".store/d{i}/l1"))).unwrap();
        symlink(&next, root.join(format!(".store/d{i}/l2"))).unwrap();
    }
    symlink(".store/d0", root.join("start")).unwrap();
    fs::write(root.join(".store/d19/deep.yaml"), SERVICE).unwrap();
    let started = Instant::now();
    let files = read_config_dir(root, &Limits::DEFAULT).unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    let names: Vec<&String> = files.keys().collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "a/x.yaml");
    assert!(
        names[1].starts_with("start/l") && names[1].ends_with("/deep.yaml"),
        "{names:?}"
    );
}

#[test]
fn invalid_utf8_is_an_error_at_the_bad_byte() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("bad.yaml"), b"a: b\ncd: \xff\n").unwrap();
    assert_eq!(
        errors(read_config_dir(tmp.path(), &Limits::DEFAULT)),
        [format!(
            "{}/bad.yaml:2:5: file is not valid UTF-8",
            tmp.path().display()
        )]
    );
    // 9 = the length of the valid prefix "a: b\ncd: ".
    let d = not_utf8(Path::new("x.yaml"), b"a: b\ncd: \xff\n", 9);
    assert_eq!((d.line, d.column), (2, 5));
}

#[test]
fn files_over_the_limits_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_file_bytes: 100,
        max_total_bytes: 250,
        ..Limits::DEFAULT
    };
    fs::write(tmp.path().join("a.yaml"), "#".repeat(90)).unwrap();
    fs::write(tmp.path().join("b.yaml"), "#".repeat(101)).unwrap();
    fs::write(tmp.path().join("c.yaml"), "#".repeat(90)).unwrap();
    fs::write(tmp.path().join("d.yaml"), "#".repeat(90)).unwrap();
    fs::write(tmp.path().join("e.yaml"), "#".repeat(90)).unwrap();
    let dir = tmp.path().display();
    assert_eq!(
        errors(read_config_dir(tmp.path(), &limits)),
        [
            format!("{dir}/b.yaml:1:1: file is larger than 100 bytes"),
            format!(
                "{dir}/d.yaml:1:1: the config files together are larger than 250 bytes; the \
                 rest are not read"
            ),
        ]
    );
    let one = read_config_file(&tmp.path().join("b.yaml"), &limits);
    assert!(matches!(one, Err(LoadError::Invalid(d)) if d[0].message.contains("larger")));
}

#[test]
fn too_many_files_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..5 {
        fs::write(tmp.path().join(format!("{i}.yaml")), "").unwrap();
    }
    let limits = Limits {
        max_files: 3,
        ..Limits::DEFAULT
    };
    let errors = errors(read_config_dir(tmp.path(), &limits));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].ends_with("more than 3 config files; the rest are not read"));
}

/// A deep tree costs no more than the depth limit: the walk stops there and says so.
#[test]
fn deep_trees_stop_at_the_depth_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut deep = tmp.path().to_path_buf();
    for _ in 0..200 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("deep.yaml"), SERVICE).unwrap();
    let started = Instant::now();
    let errors = errors(read_config_dir(tmp.path(), &Limits::DEFAULT));
    assert!(started.elapsed() < Duration::from_secs(20));
    let expected = format!(
        "{}{}:1:1: directories nest more than 32 levels deep; not read",
        tmp.path().display(),
        "/d".repeat(33)
    );
    assert_eq!(errors, [expected]);
}

#[test]
fn fingerprints_change_with_content_and_see_the_same_tree() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.yaml"), SERVICE).unwrap();
    let before = fingerprint(tmp.path(), &Limits::DEFAULT).unwrap();
    assert_eq!(before, fingerprint(tmp.path(), &Limits::DEFAULT).unwrap());
    fs::write(tmp.path().join("a.yaml"), format!("{SERVICE}# more\n")).unwrap();
    assert_ne!(before, fingerprint(tmp.path(), &Limits::DEFAULT).unwrap());
}
