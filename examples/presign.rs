//! Prints a presigned GET URL for a key of a bucket, for `bench/cluster`'s "Garage direct"
//! case: `cargo run --release --example presign -- BUCKET KEY` with the usual `AWS_*`
//! variables (as for `larder serve`). The URL is good for an hour.

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::signer::Signer;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bucket, key] = args.as_slice() else {
        eprintln!("usage: presign BUCKET KEY");
        std::process::exit(64);
    };
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_allow_http(true)
        .build()
        .expect("the AWS_* variables describe a bucket");
    let hour = std::time::Duration::from_secs(3600);
    let url = store.signed_url(http::Method::GET, &Path::from(key.as_str()), hour).await;
    println!("{}", url.expect("a signed URL"));
}
