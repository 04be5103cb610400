//! POSIX `sh` quoting: the one audited place where sersyncd produces shell text.
//!
//! # Why this module exists
//!
//! sersync 2.5 built every rsync invocation as one string for `system()`, wrapped each path
//! in `"…"` and escaped only `$`. A file named ``a`touch PWNED`b`` therefore ran `touch` as
//! root, a `"` in a name broke the command, and the broken commands were appended to a
//! world-writable `rsync_fail_log.sh` that root later ran with `/bin/sh` (see the reference,
//! §1.6–1.7). sersyncd never runs a shell: rsync is started with an argument vector, and the
//! paths are elements of it (`./path`) or go NUL-separated on its stdin. The only shell
//! text we still write is the
//! human-readable failure record `rsync_fail_log.sh` (see [`crate::failure::script`]), and
//! every word in it goes through [`quote`].
//!
//! Architecture invariant: nothing else in the crate formats shell syntax. If you need to
//! show a command that someone may paste into a terminal, build it with [`join`].
//!
//! # Threat model
//!
//! Every byte of a word may be chosen by an attacker: file names come from any local user
//! who can write under a watched tree, and they may contain quotes, backticks, `$( )`,
//! globs, `~`, `#`, newlines, leading dashes, and bytes that are not UTF-8. [`quote`] must
//! return text that any POSIX shell (dash, `bash --posix`, bash, busybox ash) parses back
//! into exactly one word equal to the input, with no expansion of any kind (parameter,
//! command, arithmetic, tilde, pathname, field splitting, brace, history) and in any
//! position (argument, command name, after `set -k`).
//!
//! The construction is the classic one: wrap the word in single quotes, inside which every
//! byte but `'` is literal in every POSIX shell, and write each `'` as `'\''` (close the
//! quote, an escaped quote, reopen). Words made only of characters no shell treats
//! specially are left bare so the record stays readable (`--timeout=100`, `/srv/www`).
//!
//! The one thing no shell word can carry is a NUL byte (the shell reads C strings). Paths
//! and `argv` elements can never contain NUL on Unix, so [`quote`] rejects it with
//! [`QuoteError::Nul`] rather than silently truncating.
//!
//! `!` (history expansion) is only active in interactive bash; inside single quotes it is
//! literal even there.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// A word that cannot be represented in shell text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteError {
    /// The word contains a NUL byte at this offset. NUL cannot occur in a Unix path or
    /// `argv` element, so this is a bug in the caller, never an attacker's win.
    Nul { offset: usize },
}

impl fmt::Display for QuoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuoteError::Nul { offset } => write!(
                f,
                "cannot quote a word containing a NUL byte (at offset {offset}) for the shell"
            ),
        }
    }
}

impl std::error::Error for QuoteError {}

/// Bytes that are never special to a POSIX shell in any position of a word.
///
/// `%` (a job spec at the start of a command) and `=` (an assignment word) are in the set
/// but are checked in context by [`needs_quotes`].
fn is_bare_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'_' | b'@' | b'%' | b'+' | b'=' | b':' | b',' | b'.' | b'/' | b'-'
        )
}

/// Words that are reserved in command position (POSIX plus bash's own).
const RESERVED: &[&[u8]] = &[
    b"case",
    b"do",
    b"done",
    b"elif",
    b"else",
    b"esac",
    b"fi",
    b"for",
    b"if",
    b"in",
    b"then",
    b"until",
    b"while",
    b"function",
    b"select",
    b"time",
    b"coproc",
];

/// Whether `word` must be single-quoted to be read back literally in every position.
fn needs_quotes(word: &[u8]) -> bool {
    let Some(&first) = word.first() else {
        return true; // the empty word must be written as ''
    };
    if !word.iter().copied().all(is_bare_safe) || first == b'%' {
        return true;
    }
    // `NAME=value` is an assignment in command position (and anywhere after `set -k`).
    if let Some(eq) = word.iter().position(|&b| b == b'=') {
        let name = &word[..eq];
        let is_name = name
            .first()
            .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_')
            && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
        if is_name {
            return true;
        }
    }
    RESERVED.contains(&word)
}

/// Quotes `word` so that any POSIX shell reads it back as exactly these bytes.
///
/// Bare when the word is made only of `[A-Za-z0-9_@%+=:,./-]` and cannot be mistaken for an
/// assignment, a job spec or a reserved word; otherwise single-quoted with each `'` written
/// as `'\''`. The empty word becomes `''`.
///
/// # Errors
///
/// [`QuoteError::Nul`] if the word contains a NUL byte, which no shell word can hold.
pub fn quote(word: &[u8]) -> Result<Vec<u8>, QuoteError> {
    if let Some(offset) = word.iter().position(|&b| b == 0) {
        return Err(QuoteError::Nul { offset });
    }
    if !needs_quotes(word) {
        return Ok(word.to_vec());
    }
    let quotes = word.iter().filter(|&&b| b == b'\'').count();
    let mut out = Vec::with_capacity(word.len() + 2 + 3 * quotes);
    out.push(b'\'');
    for &byte in word {
        if byte == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(byte);
        }
    }
    out.push(b'\'');
    Ok(out)
}

/// [`quote`] for an `OsStr` (a path or an `argv` element).
///
/// # Errors
///
/// [`QuoteError::Nul`] if the string contains a NUL byte.
pub fn quote_os(word: &OsStr) -> Result<Vec<u8>, QuoteError> {
    quote(word.as_bytes())
}

/// Quotes every element of `argv` and joins them with single spaces: a command line that a
/// POSIX shell splits back into exactly `argv`.
///
/// # Errors
///
/// [`QuoteError::Nul`] if any element contains a NUL byte (the offset is within that
/// element).
pub fn join<S: AsRef<OsStr>>(argv: &[S]) -> Result<Vec<u8>, QuoteError> {
    let mut out = Vec::new();
    for (index, arg) in argv.iter().enumerate() {
        if index > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(&quote_os(arg.as_ref())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn q(word: &[u8]) -> String {
        String::from_utf8(quote(word).expect("no NUL")).expect("test inputs are UTF-8")
    }

    #[test]
    fn table_of_tricky_words() {
        let table: &[(&[u8], &str)] = &[
            (b"", "''"),
            (b"plain", "plain"),
            (b"/srv/www/a.txt", "/srv/www/a.txt"),
            (b"--timeout=100", "--timeout=100"),
            (
                b"--password-file=/etc/rsync.pas",
                "--password-file=/etc/rsync.pas",
            ),
            (b"rsync://user@host:874/mod/", "rsync://user@host:874/mod/"),
            (b"-rf", "-rf"),
            (b"a,b+c:d@e", "a,b+c:d@e"),
            (b"FOO=bar", "'FOO=bar'"),
            (b"_x1=", "'_x1='"),
            (b"1x=y", "1x=y"),
            (b"%1", "'%1'"),
            (b"50%", "50%"),
            (b"if", "'if'"),
            (b"done", "'done'"),
            (b"iffy", "iffy"),
            (b"'", r"''\'''"),
            (b"it's", r"'it'\''s'"),
            (b"''", r"''\'''\'''"),
            (b"a\"b", "'a\"b'"),
            (b"a`touch PWNED`b", "'a`touch PWNED`b'"),
            (b"$(touch PWNED)", "'$(touch PWNED)'"),
            (b"${HOME}", "'${HOME}'"),
            (b"$((1+1))", "'$((1+1))'"),
            (b"x;y", "'x;y'"),
            (b"a&b|c", "'a&b|c'"),
            (b"<in >out", "'<in >out'"),
            (b"*", "'*'"),
            (b"?", "'?'"),
            (b"[ab]", "'[ab]'"),
            (b"~", "'~'"),
            (b"~root", "'~root'"),
            (b"#comment", "'#comment'"),
            (b"!", "'!'"),
            (b"{a,b}", "'{a,b}'"),
            (b"a b", "'a b'"),
            (b"tab\there", "'tab\there'"),
            (b"new\nline", "'new\nline'"),
            (b"back\\slash", "'back\\slash'"),
            (b"\\", "'\\'"),
            (b"caf\xc3\xa9", "'caf\u{e9}'"),
        ];
        for (input, expected) in table {
            assert_eq!(
                q(input),
                *expected,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn invalid_utf8_is_kept_byte_for_byte() {
        assert_eq!(quote(b"a\xffb").unwrap(), b"'a\xffb'".to_vec());
        assert_eq!(quote(b"\x80").unwrap(), b"'\x80'".to_vec());
    }

    #[test]
    fn nul_is_rejected_with_its_offset() {
        assert_eq!(quote(b"ab\0c"), Err(QuoteError::Nul { offset: 2 }));
        assert_eq!(quote(b"\0"), Err(QuoteError::Nul { offset: 0 }));
        let argv = [OsString::from("ok"), OsString::from_vec(b"x\0".to_vec())];
        assert_eq!(join(&argv), Err(QuoteError::Nul { offset: 1 }));
        assert!(QuoteError::Nul { offset: 1 }.to_string().contains("NUL"));
    }

    #[test]
    fn join_separates_with_single_spaces() {
        let argv = ["rsync", "-a", "a b", "", "--x=1"];
        assert_eq!(join(&argv).unwrap(), b"rsync -a 'a b' '' --x=1".to_vec());
        let empty: [&str; 0] = [];
        assert_eq!(join(&empty).unwrap(), Vec::<u8>::new());
        assert_eq!(
            quote_os(OsStr::new("it's")).unwrap(),
            quote(b"it's").unwrap()
        );
    }

    /// xorshift64: a tiny deterministic PRNG so the property test is reproducible.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// Bytes that matter to a shell, drawn more often than the rest.
    const NASTY: &[u8] = b"'\"\\`$\n;&|<>*?[ ~#!-=%{}()\t";

    fn random_word(rng: &mut XorShift) -> Vec<u8> {
        let len = rng.below(301) as usize;
        (0..len)
            .map(|_| {
                if rng.below(3) == 0 {
                    NASTY[rng.below(NASTY.len() as u64) as usize]
                } else {
                    // 1..=255: anything but NUL.
                    (rng.below(255) + 1) as u8
                }
            })
            .collect()
    }

    /// The shells to test against: every POSIX sh we can find.
    fn shells() -> Vec<Vec<&'static str>> {
        let mut shells = vec![vec!["/bin/sh", "-c"]];
        for (path, args) in [
            ("/bin/dash", vec!["/bin/dash", "-c"]),
            ("/bin/bash", vec!["/bin/bash", "--posix", "-c"]),
            ("/bin/bash", vec!["/bin/bash", "-c"]),
        ] {
            if Path::new(path).exists() {
                shells.push(args);
            }
        }
        shells
    }

    /// Runs `printf '%s\0' WORDS…` through `shell` and returns the NUL-split output.
    fn round_trip(shell: &[&str], words: &[Vec<u8>], cwd: &Path) -> Vec<Vec<u8>> {
        let mut script = b"printf '%s\\0'".to_vec();
        for word in words {
            script.push(b' ');
            script.extend_from_slice(&quote(word).expect("generated words have no NUL"));
        }
        let output = Command::new(shell[0])
            .args(&shell[1..])
            .arg(OsString::from_vec(script))
            .current_dir(cwd)
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("shell runs");
        assert!(
            output.status.success(),
            "{shell:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut fields: Vec<Vec<u8>> = output
            .stdout
            .split(|&b| b == 0)
            .map(<[u8]>::to_vec)
            .collect();
        // printf terminates every word with NUL, so the split ends with one empty field.
        assert_eq!(
            fields.pop(),
            Some(Vec::new()),
            "{shell:?}: output not NUL-terminated"
        );
        fields
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sersync-shell-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    #[test]
    fn property_arbitrary_bytes_round_trip_through_real_shells() {
        let cwd = scratch_dir("prop");
        // Files a failed quote could glob-match or that the shell could create.
        std::fs::write(cwd.join("a"), b"").unwrap();
        std::fs::write(cwd.join("b c"), b"").unwrap();
        let mut cases = 0;
        for seed in [0x9E37_79B9_7F4A_7C15u64, 0xD1B5_4A32_D192_ED03, 42] {
            let mut rng = XorShift(seed);
            for _chunk in 0..4 {
                let words: Vec<Vec<u8>> = (0..200).map(|_| random_word(&mut rng)).collect();
                for shell in shells() {
                    assert_eq!(
                        round_trip(&shell, &words, &cwd),
                        words,
                        "{shell:?}, seed {seed:#x}"
                    );
                }
                cases += words.len();
            }
        }
        assert!(cases >= 2000);
        let left: Vec<_> = std::fs::read_dir(&cwd)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "the shell created files: {left:?}");
        let _ = std::fs::remove_dir_all(&cwd);
    }

    #[test]
    fn every_single_byte_round_trips() {
        let cwd = scratch_dir("bytes");
        let words: Vec<Vec<u8>> = (1..=255u8)
            .flat_map(|b| [vec![b], vec![b'x', b, b'y'], vec![b, b]])
            .collect();
        for shell in shells() {
            assert_eq!(round_trip(&shell, &words, &cwd), words, "{shell:?}");
        }
        let _ = std::fs::remove_dir_all(&cwd);
    }

    #[test]
    fn hostile_arguments_execute_nothing() {
        let cwd = scratch_dir("pwned");
        let words: Vec<Vec<u8>> = [
            &b"$(touch PWNED)"[..],
            b"`touch PWNED`",
            b"a`touch PWNED`b",
            b"'; touch PWNED; '",
            b"\"; touch PWNED; \"",
            b"x\ntouch PWNED",
            b"x;touch PWNED",
            b"x&&touch PWNED",
            b"x|touch PWNED",
            b"$(touch${IFS}PWNED)",
            b"PWNED=1",
            b">PWNED",
        ]
        .iter()
        .map(|w| w.to_vec())
        .collect();
        for shell in shells() {
            assert_eq!(round_trip(&shell, &words, &cwd), words, "{shell:?}");
            // The quoted word as a command name must not run anything either.
            let script = join(&[OsStr::new("$(touch PWNED)")]).unwrap();
            let _ = Command::new(shell[0])
                .args(&shell[1..])
                .arg(OsString::from_vec(script))
                .current_dir(&cwd)
                .output()
                .expect("shell runs");
            assert!(
                !cwd.join("PWNED").exists(),
                "{shell:?} executed a quoted word"
            );
        }
        let _ = std::fs::remove_dir_all(&cwd);
    }
}
