"""Write compose's nginx configuration from the replica test's rules.

python scripts/nginx_conf.py > docker/nginx.conf
"""

from __future__ import annotations

from cloud_service.cluster import compose_nginx_config

if __name__ == "__main__":
    print(compose_nginx_config(), end="")
