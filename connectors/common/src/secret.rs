//! Secrets of a connector config: values that never print. A [`Secret`] shows as `***` in `Debug` and
//! `Display`; the secrets a process loaded are registered so that config errors and log lines
//! ([`redacting_stderr`]) show `${{ secrets.NAME }}` wherever a value would have appeared.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::RwLock;

use serde::{Deserialize, Deserializer};

/// A secret value: `Debug` and `Display` print `***`; only [`Secret::expose`] gives the value, at the one
/// place that hands it to a client library.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from a secrets file or an environment variable.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the client that needs it. Never format it into a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// From a YAML string (usually a `${{ secrets.NAME }}` reference, substituted before this runs).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// The secrets of one config: `NAME=value` lines of the secrets file, by name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, Secret>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    /// Secrets from `(name, value)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().map(|(name, value)| (name, Secret::new(value))).collect())
    }

    /// The secret called `name`.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }

    /// `text` with every secret value replaced by its reference `${{ secrets.NAME }}`, also where the value
    /// appears escaped (a parser's message quotes it with `Debug`), longest values first so a value that
    /// contains another is replaced whole. A value shorter than [`SHORT_SECRET`] characters is replaced only
    /// where it stands alone (not inside a word): replacing every `u` of a text would spell the secret out
    /// by the letters missing around the references.
    pub fn redact(&self, text: &str) -> String {
        let mut forms: Vec<(String, &String)> = Vec::new();
        for (name, secret) in self.0.iter().filter(|(_, s)| !s.0.is_empty()) {
            for form in [secret.0.clone(), secret.0.escape_debug().to_string(), secret.0.escape_default().to_string()] {
                if !forms.iter().any(|(f, _)| *f == form) {
                    forms.push((form, name));
                }
            }
        }
        forms.sort_by_key(|(form, _)| std::cmp::Reverse(form.len()));
        let mut text = text.to_string();
        for (form, name) in forms {
            if text.contains(&form) {
                let reference = format!("${{{{ secrets.{name} }}}}");
                text = if form.chars().count() >= SHORT_SECRET {
                    text.replace(&form, &reference)
                } else {
                    replace_standalone(&text, &form, &reference)
                };
            }
        }
        text
    }

    /// Adds these secrets to the ones [`redact`] and [`redacting_stderr`] hide for the rest of the process.
    pub fn register(&self) {
        if let Ok(mut registered) = REGISTERED.write() {
            for (name, secret) in &self.0 {
                registered.0.insert(name.clone(), secret.clone());
            }
        }
    }
}

/// Secrets with fewer characters than this are redacted only where they stand alone ([`Secrets::redact`]).
pub const SHORT_SECRET: usize = 8;

/// `text` with each occurrence of `needle` that no letter, digit or `_` touches replaced.
fn replace_standalone(text: &str, needle: &str, replacement: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(needle) {
        if at < last {
            continue;
        }
        let end = at + needle.len();
        if !word(text[..at].chars().next_back()) && !word(text[end..].chars().next()) {
            out.push_str(&text[last..at]);
            out.push_str(replacement);
            last = end;
        }
    }
    out.push_str(&text[last..]);
    out
}

static REGISTERED: RwLock<Secrets> = RwLock::new(Secrets(BTreeMap::new()));

/// `text` with every registered secret value replaced by its reference: for messages printed outside the
/// logger (a binary's last error).
pub fn redact(text: &str) -> String {
    match REGISTERED.read() {
        Ok(registered) => registered.redact(text),
        Err(_) => text.to_string(),
    }
}

/// Standard error with every registered secret redacted, for `tracing_subscriber::fmt().with_writer(...)`: a
/// secret that reached a log field (a topic name read from a secret, a client's error) still never prints.
pub fn redacting_stderr() -> RedactingStderr {
    RedactingStderr
}

/// See [`redacting_stderr`]. The formatter writes each event in one call, so each call is redacted whole.
#[derive(Debug)]
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_formats_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?} {secret:#?}"), "*** Secret(***) Secret(***)");
        let secrets = Secrets::new([("PASS".into(), "hunter2".into()), ("LONG".into(), "hunter2-more".into())]);
        assert_eq!(format!("{secrets:?}"), r#"{"LONG", "PASS"}"#);
        assert_eq!(secrets.redact("a hunter2 and hunter2-more"), "a ${{ secrets.PASS }} and ${{ secrets.LONG }}");
    }

    /// Issue 28: a one-character username `u` redacted inside a log line must not spell itself out by the
    /// `u`s missing from the words around it, and must still be hidden where it stands alone.
    #[test]
    fn a_short_secret_is_hidden_where_it_stands_alone_and_words_keep_their_letters() {
        let secrets = Secrets::new([("USER".into(), "u".into()), ("PIN".into(), "0x1F2E".into())]);
        let line = r#"connecting as "u" to bucket uploads: user=u pin 0x1F2E rejected"#;
        let redacted = secrets.redact(line);
        assert_eq!(
            redacted,
            r#"connecting as "${{ secrets.USER }}" to bucket uploads: user=${{ secrets.USER }} pin ${{ secrets.PIN }} rejected"#
        );
        // The words that merely contain the letter are untouched: no reference sits inside a word.
        assert!(redacted.contains("bucket uploads: user="), "{redacted}");
        assert!(!redacted.contains(r#""u""#) && !redacted.contains("=u "), "{redacted}");
        // A long secret is hidden wherever it appears, also inside a word.
        let long = Secrets::new([("TOKEN".into(), "abcdefgh1234".into())]);
        assert_eq!(long.redact("Bearerabcdefgh1234x"), "Bearer${{ secrets.TOKEN }}x");
    }
}
