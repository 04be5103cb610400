//! The man pages and shell completions of both binaries are generated from their clap
//! definitions and committed under `packaging/` (packagers install them as they are, with
//! no build step). This test renders them again and fails when the committed copies are
//! stale; `SERSYNC_UPDATE_GENERATED=1 cargo test generated` rewrites them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// The environment variable that turns the comparison into a rewrite.
const UPDATE: &str = "SERSYNC_UPDATE_GENERATED";

/// (binary, man section, clap command).
fn commands() -> Vec<(&'static str, &'static str, clap::Command)> {
    vec![
        ("sersyncd", "8", crate::daemon::Cli::command()),
        ("sersyncctl", "1", super::Cli::command()),
    ]
}

/// Every generated file: path relative to the package root, and its contents.
fn render_all() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (name, section, command) in commands() {
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone())
            .section(section)
            .manual("sersync")
            .source(format!("sersync {}", env!("CARGO_PKG_VERSION")))
            .render(&mut page)
            .expect("render a man page");
        files.push((
            PathBuf::from(format!("packaging/man/{name}.{section}")),
            page,
        ));
        // One page per subcommand: the main page's SUBCOMMANDS section refers to them.
        // Built, so the global options (-i, --json, --bus) show on every subcommand page.
        let mut built = command.clone();
        built.build();
        for sub in built.get_subcommands().filter(|s| s.get_name() != "help") {
            let page_name = format!("{name}-{}", sub.get_name());
            let mut page = Vec::new();
            let sub = sub
                .clone()
                // clap keeps names as `&'static str` (no "string" feature); a test may leak.
                .name(&*Box::leak(page_name.clone().into_boxed_str()))
                .bin_name(format!("{name} {}", sub.get_name()))
                .version(env!("CARGO_PKG_VERSION"));
            clap_mangen::Man::new(sub)
                .section(section)
                .manual("sersync")
                .source(format!("sersync {}", env!("CARGO_PKG_VERSION")))
                .render(&mut page)
                .expect("render a man page");
            files.push((
                PathBuf::from(format!("packaging/man/{page_name}.{section}")),
                page,
            ));
        }
        for (shell, file) in [
            (Shell::Bash, format!("{name}.bash")),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command.clone(), name, &mut script);
            files.push((
                PathBuf::from(format!("packaging/completions/{file}")),
                script,
            ));
        }
    }
    files
}

#[test]
fn man_pages_and_completions_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os(UPDATE).is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (relative, contents) in render_all() {
        let path = root.join(&relative);
        if update {
            std::fs::create_dir_all(path.parent().expect("a parent directory"))
                .expect("create the directory");
            std::fs::write(&path, &contents).expect("write a generated file");
            continue;
        }
        match std::fs::read(&path) {
            Ok(committed) if committed == contents => {}
            Ok(_) => stale.push(format!("{} differs", relative.display())),
            Err(err) => stale.push(format!("{}: {err}", relative.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are stale (the CLI changed?); run `{UPDATE}=1 cargo test generated` \
         and commit the result:\n  {}",
        stale.join("\n  ")
    );
}
