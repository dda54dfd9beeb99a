//! Finding the external tools the tests check vivify's output with (shared by path with
//! vivify-cli's serve tests).

use std::path::Path;
use std::process::Command;

/// Fails (never skips) when an external test tool is missing.
pub fn require(tool: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = format!("{dir}/{tool}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    if let Ok(out) = Command::new("which").arg(tool).output()
        && out.status.success()
    {
        return String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    panic!(
        "`{tool}` is not installed: these tests check the files with Debian's ffmpeg and chromium. \
         Install them with `apt-get install ffmpeg chromium chromium-driver` \
         (.ci/run and scripts/test.sh do it when run as root)"
    );
}
