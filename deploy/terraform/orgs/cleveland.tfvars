organization = "cleveland"
role         = "site"
vpc_cidr     = "10.41.0.0/16"
data_bucket  = "cleveland-fedkit-data"
admin_cidrs  = ["192.0.2.0/24"]
