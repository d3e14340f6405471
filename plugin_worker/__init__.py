"""One kubelet device-plugin server per extended resource (deviceplugin/v1beta1).

The supervisor uses `plugin_worker.api` (value types, events protocol) and
`plugin_worker.worker.PluginWorker`; nothing here imports the supervisor.
"""
