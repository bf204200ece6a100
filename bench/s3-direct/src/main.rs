//! Moves one file to or from S3 with `aws-sdk-s3`, natively: the "direct"
//! figure `bench/s3.sh` holds the S3 plugin against. Prints the seconds the
//! transfer took. `small-put` and `small-get` move COUNT objects of 4 KiB
//! under the prefix KEY one after another, each a request of its own: the
//! per-object floor the S3 server sets.
//!
//!   AWS_ACCESS_KEY_ID=.. AWS_SECRET_ACCESS_KEY=.. s3-direct put|get ENDPOINT BUCKET KEY FILE
//!   AWS_ACCESS_KEY_ID=.. AWS_SECRET_ACCESS_KEY=.. s3-direct small-put|small-get ENDPOINT BUCKET PREFIX COUNT

use std::time::Instant;

use anyhow::Context as _;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [op, endpoint, bucket, key, file] = args.as_slice() else {
        anyhow::bail!("usage: s3-direct put|get|small-put|small-get ENDPOINT BUCKET KEY FILE|COUNT");
    };
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID")?;
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY")?;
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(key_id, secret, None, None, "bench"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        // As the plugin does: not every S3 server checks the newer checksums.
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let started = Instant::now();
    match op.as_str() {
        "put" => {
            let body = ByteStream::from_path(file).await?;
            client.put_object().bucket(bucket).key(key).body(body).send().await?;
        }
        "get" => {
            let object = client.get_object().bucket(bucket).key(key).send().await?;
            let mut body = object.body.into_async_read();
            let mut out = tokio::fs::File::create(file).await?;
            tokio::io::copy(&mut body, &mut out).await?;
        }
        "small-put" => {
            let body = vec![7u8; 4096];
            for i in 0..file.parse::<u32>().context("COUNT")? {
                let key = format!("{key}/f{i}");
                client.put_object().bucket(bucket).key(key).body(ByteStream::from(body.clone())).send().await?;
            }
        }
        "small-head" => {
            for i in 0..file.parse::<u32>().context("COUNT")? {
                client.head_object().bucket(bucket).key(format!("{key}/f{i}")).send().await?;
            }
        }
        "small-list" => {
            for _ in 0..file.parse::<u32>().context("COUNT")? {
                client.list_objects_v2().bucket(bucket).prefix(format!("{key}/")).max_keys(1).send().await?;
            }
        }
        "small-get" => {
            for i in 0..file.parse::<u32>().context("COUNT")? {
                let object = client.get_object().bucket(bucket).key(format!("{key}/f{i}")).send().await?;
                object.body.collect().await?;
            }
        }
        other => anyhow::bail!("unknown operation {other:?}"),
    }
    println!("{:.6}", started.elapsed().as_secs_f64());
    Ok(())
}
