pytest_plugins = ["testground.pytest_plugin"]
