"""Runs the cloudbox Pub/Sub emulator on Python 3.11.

cloudbox 0.2.3 declares Python >= 3.14 because its modules use annotations that 3.11 evaluates eagerly;
compiling its modules with `from __future__ import annotations` semantics is all it needs here.
"""
import __future__
import sys
from importlib.machinery import PathFinder, SourceFileLoader


class _PostponedAnnotationsLoader(SourceFileLoader):
    def get_code(self, fullname):
        path = self.get_filename(fullname)
        flags = __future__.annotations.compiler_flag
        return compile(self.get_data(path), path, "exec", flags=flags, dont_inherit=True)


class _CloudboxFinder:
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.split(".")[0] != "cloudbox":
            return None
        spec = PathFinder.find_spec(fullname, path, target)
        if spec and isinstance(spec.loader, SourceFileLoader):
            spec.loader = _PostponedAnnotationsLoader(spec.loader.name, spec.loader.path)
        return spec


sys.meta_path.insert(0, _CloudboxFinder)
from cloudbox.main import main  # noqa: E402

main()
