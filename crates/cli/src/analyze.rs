//! `trellis analyze PATH…`: checks resources against each other (unknown hosts, missing
//! subsets, shadowed matches, port names, conflicting policies) with
//! [`trellis_api::analyze`]. Exit status 1 when any finding is an error.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use trellis_api::analyze::{analyze, documents, Document, Severity};

#[derive(Args)]
pub struct AnalyzeArgs {
    /// Files or directories of YAML resources, analysed together as one config.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// `text` (one line per finding) or `json`.
    #[arg(short = 'o', long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub fn run(a: AnalyzeArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for path in &a.paths {
        if path.is_dir() {
            yaml_files(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    let mut docs: Vec<Document> = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        docs.extend(documents(file, &text));
    }
    let findings = analyze(&docs);
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings, infos) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info),
    );
    if a.output == "json" {
        let out = serde_json::json!({
            "resources": docs.len(),
            "errors": errors,
            "warnings": warnings,
            "infos": infos,
            "findings": findings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for f in &findings {
            println!("{f}");
        }
        println!(
            "{} resources analysed: {errors} errors, {warnings} warnings, {infos} infos",
            docs.len()
        );
    }
    if errors > 0 {
        // The report is already printed; the exit status says the rest.
        std::process::exit(1);
    }
    Ok(())
}

/// Every `*.yaml`/`*.yml` file under `dir`, recursively, in sorted order, skipping hidden
/// files and directories (editor backups, `.git`), as `validate` does for directories.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}
