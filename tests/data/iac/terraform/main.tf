# A deploy user with a key: both flagged.
resource "aws_iam_user" "deploy" {
  name = "deploy"
}

resource "aws_iam_access_key" "deploy" {
  user = aws_iam_user.deploy.name
}

/* a commented-out key is not a resource:
resource "aws_iam_access_key" "old" {
  user = "old"
}
*/
// resource "aws_iam_access_key" "older" {}
# resource "aws_iam_user" "oldest" {}

resource "aws_instance" "web" {
  ami       = "ami-12345678"
  user_data = <<-EOT
    resource "aws_iam_access_key" "in_heredoc" {
    }
  EOT
}

resource aws_iam_access_key bare_labels {
  user = "ci"
}

resource "aws_iam_role" "app" {
  name               = "app"
  assume_role_policy = "{}"
}
