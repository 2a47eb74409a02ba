"""The ground floor: the one error type (errors), SI units and their converters (units), the
YAML/JSON loader that checks every key (schema). Imports nothing else of tpsim."""
