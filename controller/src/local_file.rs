//! Files on this machine the controller reads (the manifest, the router's
//! configuration): regular files of bounded size, read off the async
//! workers.

use std::path::Path;

pub async fn read(path: &Path) -> std::io::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || manifest_file::read_bounded(&path, manifest_file::MAX_READ))
        .await
        .map_err(std::io::Error::other)?
}
