from k210tool.emulator.pytest_fixtures import kmodel_bytes, make_emulator  # noqa: F401
