use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = meridian::app::Cli::parse();
    match meridian::app::run(cli) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
