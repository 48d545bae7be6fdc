//! Human output on stderr: colour only when stderr is a terminal and NO_COLOR is unset,
//! so logs and CI output stay plain. Machine output (`--json`) goes to stdout through
//! [`out`].
//!
//! Nothing here can panic: `println!`/`eprintln!` panic when the reader of a pipe is gone
//! (`cargo xtask switch 2>&1 | sed '/nix-env/q'`), and a panic inside a switch's critical
//! section would leave the profile and `$HOME` apart. A failed write is noted instead
//! ([`output_lost`]), so children started later get no dead pipe to die on.

use std::{
    io::{IsTerminal, Write},
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

static OUTPUT_LOST: AtomicBool = AtomicBool::new(false);

/// Whether a write to stdout or stderr failed (closed pipe, hung-up terminal).
pub fn output_lost() -> bool {
    OUTPUT_LOST.load(Ordering::SeqCst)
}

/// Marks the output as gone (e.g. after SIGHUP: the terminal hung up).
pub fn lose_output() {
    OUTPUT_LOST.store(true, Ordering::SeqCst);
}

fn write_err(text: &str) {
    if std::io::stderr().lock().write_all(text.as_bytes()).is_err() {
        lose_output();
    }
}

/// A line of machine or primary output on stdout (JSON, a built path, a listing).
pub fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    if o.write_all(line.as_bytes())
        .and_then(|()| o.write_all(b"\n"))
        .and_then(|()| o.flush())
        .is_err()
    {
        lose_output();
    }
}

/// Text on stderr as it is (no newline added): nix's log, a diff.
pub fn raw(text: &str) {
    write_err(text);
}

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
        write_err(&format!("\r\x1b[K{msg}"));
    }
}

/// Clears the progress line.
pub fn progress_done() {
    if stderr_is_terminal() {
        write_err("\r\x1b[K");
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
    write_err(&format!("{} {msg}\n", paint(Style::Red, "error:")));
}

pub fn warning(msg: &str) {
    write_err(&format!("{} {msg}\n", paint(Style::Yellow, "warning:")));
}

pub fn info(msg: &str) {
    write_err(&format!("{msg}\n"));
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
    write_err(&format!("{}\n", paint(Style::Dim, &format!("$ {shown}"))));
}

/// Bytes in binary units as `nix path-info -h` prints them: `512 B`, `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// Asks `question [y/N]` on stderr and reads one line from stdin: `Some(true)` for y/yes,
/// `Some(false)` for anything else (an empty line is the default, no), `None` when stdin
/// has nothing to read (closed, /dev/null): no one could answer. A pipe is an answer like
/// a terminal (`echo y | …`), so scripts and tests can answer.
pub fn confirm(question: &str) -> Option<bool> {
    write_err(&format!("{question} [y/N] "));
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => {
            write_err("\n");
            None
        }
        Ok(_) => Some(matches!(
            line.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::human_size(512), "512 B");
        assert_eq!(super::human_size(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
