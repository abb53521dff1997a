//! The warm cache: decoded images kept across invocations of one sandbox, least recently used
//! first out, bounded by decoded bytes (`TILE_CACHE_MB`). Only successes are stored, so a
//! failed fetch is retried by the next request.

use std::sync::Arc;

use lru::LruCache;

use super::Image;

pub struct ImageCache {
    entries: LruCache<String, Arc<Image>>,
    bytes: usize,
    budget: usize,
}

impl ImageCache {
    /// A cache holding at most `budget` bytes of decoded pixels.
    pub fn new(budget: usize) -> Self {
        Self {
            entries: LruCache::unbounded(),
            bytes: 0,
            budget,
        }
    }

    pub fn get(&mut self, url: &str) -> Option<Arc<Image>> {
        self.entries.get(url).cloned()
    }

    /// Whether `key` is held, without making it the most recently used.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains(key)
    }

    /// Stores an image, evicting the least recently used ones past the budget. An image
    /// larger than the whole budget is not stored.
    pub fn put(&mut self, url: String, image: Arc<Image>) {
        let size = image.bytes();
        if size > self.budget {
            return;
        }
        if let Some(old) = self.entries.put(url, image) {
            self.bytes -= old.bytes();
        }
        self.bytes += size;
        while self.bytes > self.budget {
            match self.entries.pop_lru() {
                Some((_, evicted)) => self.bytes -= evicted.bytes(),
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(side: u32) -> Arc<Image> {
        Arc::new(Image::opaque(image::RgbImage::new(side, side)))
    }

    #[test]
    fn evicts_least_recently_used_past_the_byte_budget() {
        let mut cache = ImageCache::new(3 * 300);
        cache.put("a".into(), img(10));
        cache.put("b".into(), img(10));
        cache.put("c".into(), img(10));
        assert!(cache.get("a").is_some()); // a is now the most recent
        cache.put("d".into(), img(10));
        assert!(cache.get("b").is_none(), "b was least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some() && cache.get("d").is_some());
        assert_eq!(cache.bytes(), 900);
    }

    #[test]
    fn replacing_a_key_keeps_the_byte_count_right_and_huge_images_are_skipped() {
        let mut cache = ImageCache::new(1000);
        cache.put("a".into(), img(10));
        cache.put("a".into(), img(10));
        assert_eq!((cache.len(), cache.bytes()), (1, 300));
        cache.put("huge".into(), img(100));
        assert!(cache.get("huge").is_none());
    }
}
