//! `trellis validate PATH…`: checks config files or directories the way the control plane
//! does, without a control plane: the loader's checks, then whether the mesh can enforce
//! every security policy ([`trellis_control::policies::check`]), and for directories the
//! route warnings that span resources ([`trellis_api::routing::compile`]). Exit status 0 when
//! valid, 1 when not.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use trellis_api::load::{load_dir, parse_str, read_config_file, Diagnostic, Limits, LoadError};

#[derive(Args)]
pub struct ValidateArgs {
    /// Files or directories of YAML resources.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// `text` (one line per problem) or `json`.
    #[arg(short = 'o', long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub fn run(a: ValidateArgs) -> anyhow::Result<()> {
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut resources = 0;
    for path in &a.paths {
        if path.is_dir() {
            match load_dir(path) {
                Ok(set) => {
                    resources += set.resources.len();
                    diags.extend(set.warnings);
                    diags.extend(trellis_control::policies::check(&set.resources));
                    // Only a whole directory shows what spans files (a route's parent
                    // Service defined elsewhere), so only directories get route warnings.
                    diags.extend(trellis_api::routing::compile(&set.resources).warnings);
                }
                Err(LoadError::Invalid(d)) => diags.extend(d),
                Err(e) => bail!("{}: {e}", path.display()),
            }
        } else {
            // Bounded like a file in a directory: regular files only, within the size limit.
            let text = match read_config_file(path, &Limits::DEFAULT) {
                Ok(text) => text,
                Err(LoadError::Invalid(d)) => {
                    diags.extend(d);
                    continue;
                }
                Err(e) => bail!("{}: {e}", path.display()),
            };
            let (res, d) = parse_str(path, &text);
            resources += res.len();
            diags.extend(d);
            diags.extend(trellis_control::policies::check(&res));
        }
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    if a.output == "json" {
        let out = serde_json::json!({
            "valid": errors == 0,
            "resources": resources,
            "errors": errors,
            "warnings": diags.len() - errors,
            "diagnostics": diags,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for d in &diags {
            println!("{d}");
        }
        if errors == 0 {
            println!(
                "valid: {resources} resources, {} warnings",
                diags.len() - errors
            );
        } else {
            println!(
                "invalid: {errors} errors, {} warnings",
                diags.len() - errors
            );
        }
    }
    if errors > 0 {
        // The report is already printed; the exit status says the rest.
        std::process::exit(1);
    }
    Ok(())
}
