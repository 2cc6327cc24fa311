export { RecordCorruptError } from './codec.js';
export {
  LevelRaftStorage,
  type OpenStorageOptions,
  STORAGE_FORMAT_VERSION,
  STORAGE_MAGIC,
  type StorageIdentity,
  StorageOpenError,
  type StorageStats,
  type StorageUpdate,
} from './level-storage.js';
