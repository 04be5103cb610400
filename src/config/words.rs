//! Splitting a config string into argv words the way a POSIX shell would, without running one.
//!
//! sersync 2.5 pasted `<commonParams params>` and the command plugin's `prefix`/`suffix` into
//! a `/bin/sh -c` string. We build argv vectors instead (no shell, so no injection through
//! file names), but existing configs quote their options for a shell, e.g.
//! `params="-artuz --exclude='*.tmp' -e 'ssh -p 2222'"`. These rules keep such values meaning
//! what they meant: quoting and backslashes are honoured exactly as `sh` does; nothing is
//! expanded (`$VAR`, `` `cmd` ``, `*`, `~` stay literal) and `; | & > <` are plain characters.

/// Splits `s` into words like a POSIX shell does, without any expansion.
///
/// - Unquoted blanks (space, tab, newline) separate words.
/// - `'…'` is literal up to the next `'`.
/// - `"…"` is literal except that a backslash escapes `"`, `\`, `$` and `` ` `` (and removes
///   an escaped newline); before any other character the backslash stays.
/// - An unquoted backslash makes the next character literal; backslash-newline is removed.
/// - `''` and `""` make an empty word.
///
/// An unterminated quote or a trailing backslash is an error whose message names the
/// 1-based character where the problem starts.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    split_words_located(s).map_err(|err| format!("{} (at character {})", err.message, err.at + 1))
}

/// An error of [`split_words_located`]: what is wrong, and the 0-based index (in characters)
/// of the character that starts the problem, so the config reader can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitError {
    pub message: String,
    pub at: usize,
}

/// [`split_words`] with the error position as a number.
pub(crate) fn split_words_located(s: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    // The word being built; `None` between words, so `''` can make an empty word.
    let mut word: Option<String> = None;
    let mut chars = s.chars().enumerate().peekable();

    while let Some((index, c)) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, inner)) => current.push(inner),
                        None => {
                            return Err(SplitError {
                                message: "unterminated single quote".to_owned(),
                                at: index,
                            });
                        }
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.peek() {
                            Some(&(_, '\n')) => {
                                chars.next();
                            }
                            Some(&(_, escaped @ ('"' | '\\' | '$' | '`'))) => {
                                current.push(escaped);
                                chars.next();
                            }
                            _ => current.push('\\'),
                        },
                        Some((_, inner)) => current.push(inner),
                        None => {
                            return Err(SplitError {
                                message: "unterminated double quote".to_owned(),
                                at: index,
                            });
                        }
                    }
                }
            }
            '\\' => match chars.next() {
                Some((_, '\n')) => {}
                Some((_, escaped)) => word.get_or_insert_with(String::new).push(escaped),
                None => {
                    return Err(SplitError {
                        message: "trailing backslash escapes nothing".to_owned(),
                        at: index,
                    });
                }
            },
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    if let Some(done) = word {
        words.push(done);
    }
    Ok(words)
}
