organization    = "fedkit"
role            = "server"
vpc_cidr        = "10.40.0.0/16"
server_dns_name = "fedkit-server.example.org"
admin_cidrs     = ["192.0.2.0/24"]
