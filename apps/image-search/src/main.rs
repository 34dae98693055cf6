//! `image-search INPUT_DIR`: see the library's documentation and the README's Workloads section.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, input] = args.as_slice() else {
        eprintln!("usage: image-search INPUT_DIR   (cascade.xml, settings.txt, images/)");
        return ExitCode::from(2);
    };
    match image_search::run(input.as_ref()) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(report.as_bytes()).and_then(|_| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("image-search: {e}");
            ExitCode::from(2)
        }
    }
}
