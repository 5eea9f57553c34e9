"""mitmproxy addons: the jitgate gateway chain."""
