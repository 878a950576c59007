-- Engagement per student and course. A student of a course is a user with a student enrollment
-- in it, a submission to it or a course grade in it (page views alone do not say who is a
-- student: teachers view pages too). Students with no activity at all are kept, with zeros.
with enrollments as (
    select
        course_id,
        user_id,
        max(workflow_state) as enrollment_state
    from {{ ref('stg_enrollments') }}
    where enrollment_type = 'StudentEnrollment' and not is_deleted and user_id is not null
    group by 1, 2
),

submissions as (
    select * from {{ ref('int_submissions') }}
    where course_id is not null and user_id is not null
),

scores as (
    select * from {{ ref('stg_course_scores') }}
),

students as (
    select course_id, user_id from enrollments
    union
    select course_id, user_id from submissions
    union
    select course_id, user_id from scores
),

page_views as (
    select course_id, user_id, count(*) as page_views
    from {{ ref('stg_asset_accesses') }}
    where course_id is not null and user_id is not null
    group by 1, 2
),

activity as (
    select course_id, user_id,
        count(distinct happening_id) as events,  -- a happening delivered in both formats counts once
        count(distinct (occurred_at at time zone '{{ var("activity_time_zone") }}')::date) as active_days,
        min(occurred_at) as first_activity_at,
        max(occurred_at) as last_activity_at
    from {{ ref('stg_events') }}
    where course_id is not null and user_id is not null
    group by 1, 2
),

work as (
    select course_id, user_id,
        count(*) filter (where timeliness = 'on_time') as submissions_on_time,
        count(*) filter (where timeliness = 'late') as submissions_late,
        count(*) filter (where timeliness = 'missing') as submissions_missing
    from submissions
    group by 1, 2
)

select
    s.course_id,
    s.user_id,
    e.enrollment_state,
    coalesce(p.page_views, 0) as page_views,
    coalesce(a.events, 0) as events,
    coalesce(a.active_days, 0) as active_days,
    a.first_activity_at,
    a.last_activity_at,
    coalesce(w.submissions_on_time, 0) as submissions_on_time,
    coalesce(w.submissions_late, 0) as submissions_late,
    coalesce(w.submissions_missing, 0) as submissions_missing,
    sc.current_score,
    sc.final_score
from students as s
left join enrollments as e on e.course_id = s.course_id and e.user_id = s.user_id
left join page_views as p on p.course_id = s.course_id and p.user_id = s.user_id
left join activity as a on a.course_id = s.course_id and a.user_id = s.user_id
left join work as w on w.course_id = s.course_id and w.user_id = s.user_id
left join scores as sc on sc.course_id = s.course_id and sc.user_id = s.user_id
