//! Human output on stderr: colour only when stderr is a terminal and NO_COLOR is unset,
//! so logs and CI output stay plain. Machine output (`--json`) goes to stdout elsewhere.

use std::{io::IsTerminal, sync::OnceLock};

fn colour() -> bool {
    static COLOUR: OnceLock<bool> = OnceLock::new();
    *COLOUR
        .get_or_init(|| std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal())
}

fn stderr_is_terminal() -> bool {
    static TTY: OnceLock<bool> = OnceLock::new();
    *TTY.get_or_init(|| std::io::stderr().is_terminal())
}

/// A progress line rewritten in place on a terminal; elsewhere (CI logs) nothing, since the
/// task prints what it starts and a summary.
pub fn progress(msg: &str) {
    if stderr_is_terminal() {
        eprint!("\r\x1b[K{msg}");
    }
}

/// Clears the progress line.
pub fn progress_done() {
    if stderr_is_terminal() {
        eprint!("\r\x1b[K");
    }
}

#[derive(Clone, Copy)]
pub enum Style {
    Red,
    Yellow,
    Green,
    Dim,
    Bold,
}

/// `text` wrapped in the ANSI style when colour is on.
pub fn paint(style: Style, text: &str) -> String {
    if !colour() {
        return text.to_string();
    }
    let code = match style {
        Style::Red => "1;31",
        Style::Yellow => "1;33",
        Style::Green => "32",
        Style::Dim => "2",
        Style::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

pub fn error(msg: &str) {
    eprintln!("{} {msg}", paint(Style::Red, "error:"));
}

pub fn warning(msg: &str) {
    eprintln!("{} {msg}", paint(Style::Yellow, "warning:"));
}

pub fn info(msg: &str) {
    eprintln!("{msg}");
}

/// Names for a message: `a, b, c`, or `none` when there are none.
pub fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Announces a command before it runs, so the user sees what happens (and can rerun it).
pub fn command(shown: &str) {
    eprintln!("{}", paint(Style::Dim, &format!("$ {shown}")));
}
