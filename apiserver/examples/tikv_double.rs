//! Serves the loopback PD + TiKV double (`storage::tikv_double`) until interrupted, to try
//! `--store tikv://` without a TiKV cluster:
//!
//! ```sh
//! cargo run --release -p drover-apiserver --example tikv_double   # prints the PD endpoint
//! drover up --store tikv://127.0.0.1:PORT --demo
//! ```
//!
//! The double keeps everything in memory: its data ends with it.

use drover_apiserver::storage::tikv_double::TikvDouble;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let double = TikvDouble::start().await?;
    println!(
        "PD (and the TiKV double) at tikv://{}",
        double.pd_endpoint()
    );
    println!("TiKV store at {}; Ctrl-C to stop", double.tikv_endpoint());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
