//! Mounts a store by hand: `cargo run -p platter-fuse --example mount -- STORE DIR`.
//! Unmounts (flushing every written volume) when standard input reaches a newline or EOF.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(store), Some(dir)) = (args.next(), args.next()) else {
        return Err("usage: mount STORE DIR".into());
    };
    let store = platter_snapshotter::Store::open(&store)?;
    let handle = platter_fuse::mount(store, &dir, &platter_fuse::MountOptions::default())?;
    println!(
        "mounted on {}; press Enter to unmount",
        handle.dir().display()
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    handle.unmount()?;
    println!("unmounted");
    Ok(())
}
