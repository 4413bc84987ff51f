organization = "switzerland"
role         = "site"
vpc_cidr     = "10.43.0.0/16"
data_bucket  = "switzerland-fedkit-data"
admin_cidrs  = ["192.0.2.0/24"]
