pub mod ext4;
pub mod fat;
