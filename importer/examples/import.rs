//! A minimal driver for benchmarks and manual checks:
//! `cargo run --release -p platter-importer --example import -- SOURCE OUT [--store DIR]`
//! imports SOURCE into the sparse raw file OUT (or volume OUT of the store DIR) and
//! prints the report and progress messages.

use platter_importer::{import, FileSink, ImportOptions, ProgressEvent, StoreSink};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: import SOURCE OUT [--store DIR]");
        std::process::exit(2);
    }
    let progress = |e: ProgressEvent| {
        if let ProgressEvent::Message { text } | ProgressEvent::Detail { text } = e {
            eprintln!("{text}");
        }
    };
    let opts = ImportOptions::default();
    let report = if args.get(2).map(String::as_str) == Some("--store") {
        let store = platter_snapshotter::Store::open(std::path::Path::new(&args[3]))
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            });
        let name = platter_types::Name::new(&args[1]).expect("volume name");
        let sink = StoreSink::new(&store, &name).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
        import(&args[0], sink, &opts, &progress).map(|(r, _)| r)
    } else {
        let sink = FileSink::create(std::path::Path::new(&args[1])).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
        import(&args[0], sink, &opts, &progress).map(|(r, _)| r)
    };
    match report {
        Ok(r) => println!("{}", serde_json::to_string(&r).unwrap_or_default()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
