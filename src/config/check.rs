//! Checking a config without running anything: `sersyncctl check` and `sersyncd --check`.
//!
//! Why here: a check must reject everything start-up would reject, so it runs what
//! start-up runs on a config before anything else starts: [`super::load`] and the choice
//! of the plugin to run ([`Config::plugin_to_run`], which with `-m NAME` can fail on a
//! config that loaded). What a plugin section needs to work is validated by the schema,
//! with its position, so building the plugin at start-up cannot fail on a config that
//! passed. Both binaries print the result through [`report`], so their output is the same
//! byte for byte.

use std::path::Path;

use super::{Config, Diagnostic, print_rejection};
use crate::exit;

/// A config that passed, with its warnings.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

impl Checked {
    /// `FILE: configuration OK (N watch roots, M remotes)`.
    pub fn summary(&self, path: &Path) -> String {
        let roots = self.config.roots.len();
        let remotes: usize = self.config.roots.iter().map(|r| r.remotes.len()).sum();
        format!(
            "{}: configuration OK ({roots} watch root{}, {remotes} remote{})",
            path.display(),
            if roots == 1 { "" } else { "s" },
            if remotes == 1 { "" } else { "s" }
        )
    }
}

/// Why a check failed.
#[derive(Debug)]
pub enum Rejected {
    /// The file cannot be read or has errors: every diagnostic, warnings included.
    Invalid(Vec<Diagnostic>),
    /// `-m NAME` names no plugin, or one without a usable section (a usage error, as at
    /// start-up), with the warnings of the file, which loaded.
    Module {
        message: String,
        warnings: Vec<Diagnostic>,
    },
}

impl Rejected {
    /// The exit status start-up would end with.
    pub fn exit_code(&self) -> i32 {
        match self {
            Rejected::Invalid(_) => exit::CONFIG,
            Rejected::Module { .. } => exit::USAGE,
        }
    }
}

/// Checks the config at `path` as `sersyncd` (with `-m NAME` when `module` is given) would
/// read it at start.
pub fn check(path: &Path, module: Option<&str>) -> Result<Checked, Rejected> {
    let (config, warnings) = super::load(path).map_err(Rejected::Invalid)?;
    if let Err(message) = config.plugin_to_run(module) {
        return Err(Rejected::Module { message, warnings });
    }
    Ok(Checked { config, warnings })
}

/// Checks `path` and prints the outcome the one way both binaries do: warnings and errors
/// on stderr as start-up prints them, `FILE: configuration OK (…)` on stdout. Returns the
/// exit status: 0, 78 for an invalid config, 64 for an unusable `-m NAME`.
pub fn report(path: &Path, module: Option<&str>) -> i32 {
    match check(path, module) {
        Ok(checked) => {
            for warning in &checked.warnings {
                eprintln!("{warning}");
            }
            println!("{}", checked.summary(path));
            exit::OK
        }
        Err(rejected) => {
            match &rejected {
                Rejected::Invalid(diagnostics) => print_rejection(path, diagnostics),
                Rejected::Module { message, warnings } => {
                    for warning in warnings {
                        eprintln!("{warning}");
                    }
                    eprintln!("{}: {message}", path.display());
                }
            }
            rejected.exit_code()
        }
    }
}
