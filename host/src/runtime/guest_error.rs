//! A trapped guest's own account of why: the uncaught exception's line as Python or
//! JavaScript printed it, or the last lines of a Rust panic, read from its captured
//! stderr (already scrubbed).

/// Lines of stderr kept to explain a trap that is not an uncaught exception: a Rust
/// panic prints where, then what.
const STDERR_EXCERPT_LINES: usize = 2;

/// What a trapped guest's stderr says about why.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum GuestError {
    /// An uncaught exception's line, as the language prints it: Python's last line
    /// of a traceback (`ValueError: …`), JavaScript's message before `Stack:`.
    Exception(String),
    /// The last lines otherwise (a Rust panic's location and message), on one line.
    Tail(String),
}

/// Why a trapped guest stopped, from its stderr. componentize-py prints a Python
/// traceback and then panics in its runtime; componentize-js prints the message, a
/// `Stack:` block and an abort notice. Their own lines after the exception are noise.
pub(super) fn guest_error(text: &str) -> Option<GuestError> {
    let lines: Vec<&str> = text.lines().collect();
    // Python: the last traceback's first unindented line after its header (a
    // chained exception starts a new traceback).
    if let Some(start) = lines
        .iter()
        .rposition(|l| l.trim_end() == "Traceback (most recent call last):")
        && let Some(line) = lines[start + 1..]
            .iter()
            .find(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))
    {
        return Some(GuestError::Exception(line.trim().to_owned()));
    }
    // JavaScript: the message lines just above the last `Stack:`.
    if let Some(stack) = lines.iter().rposition(|l| l.trim_end() == "Stack:") {
        let message: Vec<&str> = lines[..stack]
            .iter()
            .rev()
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.trim())
            .collect();
        if !message.is_empty() {
            let message: Vec<&str> = message.into_iter().rev().collect();
            return Some(GuestError::Exception(message.join(" ")));
        }
    }
    let lines: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let start = lines.len().saturating_sub(STDERR_EXCERPT_LINES);
    (!lines.is_empty()).then(|| GuestError::Tail(lines[start..].join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_keeps_its_last_lines_without_the_backtrace_hint() {
        let stderr = "starting\n\nthread '<unnamed>' panicked at src/lib.rs:9:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            guest_error(stderr),
            Some(GuestError::Tail(
                "thread '<unnamed>' panicked at src/lib.rs:9:5: boom".into()
            ))
        );
        assert_eq!(guest_error("\n \n"), None);
    }

    #[test]
    fn an_uncaught_python_exception_is_its_last_traceback_line() {
        // As componentize-py 0.25.1 prints it.
        let stderr = "Traceback (most recent call last):\n  File \"/0/app.py\", line 8, in check\nRuntimeError: boom: the check has a bug\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1280:25:\nPython function threw an unexpected exception\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            guest_error(stderr),
            Some(GuestError::Exception(
                "RuntimeError: boom: the check has a bug".into()
            ))
        );
        let chained = "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\nKeyError: 'x'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"a.py\", line 3, in f\nValueError: no x\n";
        assert_eq!(
            guest_error(chained),
            Some(GuestError::Exception("ValueError: no x".into()))
        );
    }

    #[test]
    fn an_uncaught_js_exception_is_its_message_before_the_stack() {
        // As componentize-js 0.23.0 prints it.
        let stderr = "boom: the check has a bug\nStack:\n  check@raise.js:5:31\n  export_check@/tmp/296930cdec77/sources/initializer.js:671:15\nRedirecting call to abort() to mozalloc_abort\n";
        assert_eq!(
            guest_error(stderr),
            Some(GuestError::Exception("boom: the check has a bug".into()))
        );
    }
}
