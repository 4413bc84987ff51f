organization = "hungarian"
role         = "site"
vpc_cidr     = "10.42.0.0/16"
data_bucket  = "hungarian-fedkit-data"
admin_cidrs  = ["192.0.2.0/24"]
