//! `berth scan-db import`: fill the image scanner's vulnerability database from OSV archives
//! downloaded on a connected machine (see [`berth_registry::scan::import`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `berth scan-db ...`.
#[derive(Args)]
pub struct ScanDbArgs {
    #[command(subcommand)]
    pub command: ScanDbCommand,
}

#[derive(Subcommand)]
pub enum ScanDbCommand {
    /// Import OSV records (osv.dev's `Debian/all.zip`, `Alpine/all.zip`, `Ubuntu/all.zip`, a
    /// directory of OSV JSON files, or single .json files) into the scan database. `berth server`
    /// reads `<data-dir>/scan-db` by default, and picks up new records without a restart.
    Import {
        /// `.zip` archives, directories or `.json` files.
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// The server's data directory (the database goes to `<data-dir>/scan-db`).
        #[arg(long, default_value = ".berth")]
        data_dir: PathBuf,
        /// Write to this directory instead (what `berth server --scan-db DIR` reads).
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

/// Runs the verb; prints what was imported.
pub fn run(args: ScanDbArgs) -> anyhow::Result<()> {
    match args.command {
        ScanDbCommand::Import {
            sources,
            data_dir,
            db,
        } => {
            let dir = db.unwrap_or_else(|| data_dir.join("scan-db"));
            let r = berth_registry::scan::import::import(&sources, &dir)?;
            println!(
                "imported {} vulnerability records into {} ({} of other ecosystems skipped, {} invalid)",
                r.imported,
                dir.display(),
                r.other_ecosystems,
                r.invalid
            );
            Ok(())
        }
    }
}
