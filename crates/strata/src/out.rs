//! Standard output for the CLI: every line goes through [`write`], which ends the process
//! quietly when the reader went away (`strata completion zsh | head`): no panic, no message,
//! exit status 141 as a process killed by SIGPIPE would have (Rust ignores SIGPIPE, so a
//! plain `println!` panics on the broken pipe instead).

use std::io::Write;

/// `println!` to standard output, quiet on a broken pipe.
macro_rules! outln {
    ($($t:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` to standard output, quiet on a broken pipe.
macro_rules! out {
    ($($t:tt)*) => { $crate::out::write(format_args!($($t)*)) };
}

/// The exit status of a CLI whose reader closed its output.
const BROKEN_PIPE_EXIT: i32 = 141;

/// Writes `args` to standard output; a broken pipe ends the process quietly.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush()) {
        exit_on(e);
    }
}

/// Writes bytes to standard output; a broken pipe ends the process quietly.
pub fn write_bytes(b: &[u8]) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(b).and_then(|()| o.flush()) {
        exit_on(e);
    }
}

fn exit_on(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_EXIT);
    }
    eprintln!("error: writing standard output: {e}");
    std::process::exit(1);
}
