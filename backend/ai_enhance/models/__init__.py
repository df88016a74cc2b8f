"""The models layer: the catalogue, safe loading, the per-architecture adapter table, the store of
one models folder and the service operations use to get and run models.  Importing it is cheap
(no torch)."""
from .catalog import CATALOG_PATH, INSTALL_COMMAND, ModelInfo, catalog, file_sha256, hash_cache_size, load_catalog
from .loading import MODEL_SUFFIXES, build_descriptor, detect_arch, read_state_dict, registry
from .service import ModelService
from .store import LoadedModel, ModelStore, dni_strength

__all__ = ["CATALOG_PATH", "INSTALL_COMMAND", "MODEL_SUFFIXES", "LoadedModel", "ModelInfo", "ModelService",
           "ModelStore", "build_descriptor", "catalog", "detect_arch", "dni_strength", "file_sha256",
           "hash_cache_size", "load_catalog", "read_state_dict", "registry"]
